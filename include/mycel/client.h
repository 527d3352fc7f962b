// mycel's public C++ API: a client for the local daemon, myceld.
//
// An application on the laptop (an editor, a launcher, a browser
// extension's native host) uses it to feed the daemon examples as they
// happen, to ask the model for predictions, and to watch what the daemon is
// doing. It talks to myceld over the daemon's control socket, a Unix socket
// in its state directory that only the daemon's user can open; nothing here
// reaches the network.
//
//   std::unique_ptr<mycel::Client> client;
//   mycel::Status s = mycel::Client::Open(mycel::ClientOptions(), &client);
//   if (!s.ok()) { std::cerr << s.ToString() << "\n"; return 1; }
//   std::vector<mycel::Prediction> top;
//   s = client->Predict(pixels, /*top_k=*/3, &top);
//
// Errors: every call returns a Status; nothing throws. A daemon that is not
// running gives kUnavailable with a message that says so; a request the
// daemon refuses gives the daemon's reason.
//
// Thread-safety: a Client may be used from many threads at once; calls run
// concurrently over one connection. An ExampleStream is for one thread at a
// time. Objects returned through out-parameters belong to the caller.
//
// Stability: this header and mycel.h (the C ABI over it) are the interface
// mycel keeps stable within a major version; nothing else under src/ is.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#if defined(_WIN32)
#define MYCEL_EXPORT
#else
#define MYCEL_EXPORT __attribute__((visibility("default")))
#endif

namespace mycel {

// The outcome of a call: ok, or a code and a message that says what was
// wrong. Cheap to copy.
class MYCEL_EXPORT Status {
 public:
  // The same numbering as gRPC's and absl's canonical codes.
  enum class Code : int {
    kOk = 0,
    kCancelled = 1,
    kUnknown = 2,
    kInvalidArgument = 3,     // the request is malformed (wrong width, bad label, ...)
    kDeadlineExceeded = 4,    // no answer within the call's timeout
    kNotFound = 5,
    kAlreadyExists = 6,
    kPermissionDenied = 7,    // the socket belongs to another user
    kResourceExhausted = 8,   // the daemon is at a limit (too many watchers, ...)
    kFailedPrecondition = 9,  // not now or not for this model (a text prompt to a classifier, ...)
    kAborted = 10,
    kOutOfRange = 11,
    kUnimplemented = 12,      // the daemon is older than this client
    kInternal = 13,
    kUnavailable = 14,        // myceld is not running, or went away
  };

  Status() = default;  // ok
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status OK() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // "OK", or the code's name and the message: "UNAVAILABLE: myceld is not running ...".
  std::string ToString() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

struct ClientOptions {
  // Where the daemon listens. Empty: the control socket named by the config
  // file below (its [node] state_dir + "/control.sock").
  std::string socket_path;
  // The daemon's config file. Empty: $MYCEL_CONFIG, else
  // $XDG_CONFIG_HOME/mycel/mycel.toml, else the built-in defaults'
  // state directory ($XDG_STATE_HOME/mycel). Ignored when socket_path is set.
  std::string config_path;
  // How long a call waits for its answer (predictions, status, a burst's
  // acknowledgement) before it gives kDeadlineExceeded.
  double timeout_s = 30.0;
};

// What the daemon is doing (a subset of `mycel status`).
struct DaemonStatus {
  std::string state;        // training | resting | paused | waiting_for_data | on_battery | ...
  std::string reason;       // the state in words: "paused by user", "converged: no gain in 6 validations"
  std::string node_name;
  std::string version;      // myceld's
  std::string model_kind;   // mlp | cnn | char_lm | torchscript
  int64_t steps = 0;
  int64_t samples_trained = 0;
  int64_t examples_train = 0;
  int64_t examples_val = 0;
  double steps_per_s = 0;
  double train_loss = 0;    // NaN before the first step
  double val_loss = 0;      // NaN before the first validation pass
  double val_accuracy = 0;  // NaN before the first validation pass
  int64_t rounds = 0;       // gossip rounds since the daemon started
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
  int32_t peers = 0;
  int32_t peers_connected = 0;
  double uptime_s = 0;
};

// One training example. A classifier takes `values` (exactly the model's
// input width, scaled as its training data: pixels in [0, 1]) and `label`
// in [0, classes). A char_lm takes `text`, a line of UTF-8 text long enough
// for a window (context + 1 bytes). Use the factories.
struct Example {
  int64_t label = -1;
  std::vector<float> values;
  std::string text;

  static Example Labelled(int64_t label, std::vector<float> values) {
    Example e;
    e.label = label;
    e.values = std::move(values);
    return e;
  }
  static Example Text(std::string text) {
    Example e;
    e.text = std::move(text);
    return e;
  }
};

// A refused example: its index in the call's vector (or, on a stream, its
// number since the stream opened, from 0), and the daemon's reason.
struct Refusal {
  int64_t index = 0;
  std::string reason;
};

// What a burst (or all of a stream) did, once committed to the daemon's store.
struct AddResult {
  int64_t stored = 0;      // new rows written
  int64_t duplicates = 0;  // already stored (same label and values): not stored again
  int64_t evicted = 0;     // old rows the store's bound pushed out
  std::vector<Refusal> refused;
  int64_t examples_train = 0;  // the store's totals afterwards
  int64_t examples_val = 0;
};

struct Prediction {
  int64_t label = 0;        // class index, or byte value for a char_lm
  double probability = 0;
  std::string name;         // [model] class_names[label]; empty without them
};

class ExampleStream;

class MYCEL_EXPORT Client {
 public:
  // Connects lazily: Open fails only on a config it cannot read or a socket
  // path that cannot be one; the first call says whether myceld answers.
  static Status Open(const ClientOptions& options, std::unique_ptr<Client>* out);

  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The control socket this client uses.
  const std::string& socket_path() const;

  Status GetStatus(DaemonStatus* out);
  // Pause holds training (gossip goes on) until Resume. The daemon keeps
  // the choice in its store, so it outlives a restart.
  Status Pause();
  Status Resume();

  // Classifier: `values` is one input (width values). The top_k most likely
  // classes, most likely first.
  Status Predict(const std::vector<float>& values, int top_k, std::vector<Prediction>* out);
  // char_lm: the top_k most likely next bytes after `prompt`, and a greedy
  // continuation of `generate` bytes (0..10000) into *continuation if non-null.
  Status PredictText(const std::string& prompt, int top_k, int generate, std::vector<Prediction>* out,
                     std::string* continuation);

  // Stores the examples in one transaction and returns once it is committed
  // (durable). Bad examples are refused one by one with a reason; the rest
  // are kept. At most 4096 examples per call: use an ExampleStream for more.
  Status AddExamples(const std::vector<Example>& examples, AddResult* result);
  // A stream of examples over one call: Add buffers them and sends a burst
  // of `burst_size` (1..4096). At most two bursts are unacknowledged at a
  // time (the daemon reads one while it commits the other); a third waits
  // for the first's commit, so the daemon's store sets the pace and nothing
  // queues unbounded.
  // `line_format` is how the daemon reads AddLine's lines: "csv" (label,
  // then the values) or "text".
  Status OpenExampleStream(int burst_size, std::unique_ptr<ExampleStream>* out,
                           const std::string& line_format = "csv");

  // Calls on_change with the daemon's status now and then each time its
  // state or reason changes, until on_change returns false (OK), timeout_s
  // passes (OK; <= 0: no limit), or the daemon goes away (kUnavailable).
  // Blocks the calling thread meanwhile.
  Status Watch(const std::function<bool(const DaemonStatus&)>& on_change, double timeout_s);

  struct Rep;

 private:
  explicit Client(std::unique_ptr<Rep> rep);
  friend class ExampleStream;
  std::unique_ptr<Rep> rep_;
};

class MYCEL_EXPORT ExampleStream {
 public:
  ~ExampleStream();  // Finish()es if not done, dropping its status
  ExampleStream(const ExampleStream&) = delete;
  ExampleStream& operator=(const ExampleStream&) = delete;

  // Buffers `example`; when a burst is full, sends it (waiting for the
  // commit of the one before it). A non-ok status ends the stream: what
  // earlier bursts stored stays.
  Status Add(Example example);
  // The same for one line of the stream's line_format, parsed by the daemon
  // (a blank line is skipped but keeps its number). A burst holds examples
  // or lines, so switching from one to the other sends the buffered burst.
  Status AddLine(std::string line);
  // Sends what is buffered and waits until every burst sent is committed
  // (durable). If `since` is non-null,
  // it gets what the bursts committed since the last Flush that asked did
  // (for a caller that reports refusals as they come).
  Status Flush(AddResult* since = nullptr);
  // Flushes, closes the stream and, if `total` is non-null, returns what all
  // of its bursts did together. A refusal's index is the example's or line's
  // number in the stream, from 0, whichever kind it was.
  Status Finish(AddResult* total);

  struct Rep;

 private:
  explicit ExampleStream(std::unique_ptr<Rep> rep);
  friend class Client;
  std::unique_ptr<Rep> rep_;
};

// The library's version, "MAJOR.MINOR.PATCH".
MYCEL_EXPORT const char* Version();

}  // namespace mycel
