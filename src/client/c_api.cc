// The C ABI (include/mycel/mycel.h) over the public C++ client. Every entry
// point catches whatever the C++ side might throw (std::bad_alloc), so
// nothing unwinds into a C caller.
#include "mycel/mycel.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "mycel/client.h"

struct mycel_client {
  std::unique_ptr<mycel::Client> client;
};

namespace {

// Per thread, as the header promises: the last error and a prediction's names.
thread_local std::string tls_error;
thread_local std::string tls_open_error;
thread_local std::vector<std::string> tls_names;

mycel_status Done(const mycel::Status& s) {
  tls_error = s.ok() ? "" : s.message();
  return static_cast<mycel_status>(s.code());
}

mycel_status Fail(mycel_status code, const char* message) {
  tls_error = message;
  return code;
}

void CopyString(const std::string& from, char* to, size_t size) {
  const size_t n = std::min(from.size(), size - 1);
  std::memcpy(to, from.data(), n);
  to[n] = '\0';
}

void ToC(const mycel::DaemonStatus& in, mycel_daemon_status* out) {
  std::memset(out, 0, sizeof(*out));
  CopyString(in.state, out->state, sizeof(out->state));
  CopyString(in.reason, out->reason, sizeof(out->reason));
  out->steps = in.steps;
  out->samples_trained = in.samples_trained;
  out->examples_train = in.examples_train;
  out->examples_val = in.examples_val;
  out->steps_per_s = in.steps_per_s;
  out->train_loss = in.train_loss;
  out->val_accuracy = in.val_accuracy;
  out->rounds = in.rounds;
  out->peers = in.peers;
  out->peers_connected = in.peers_connected;
}

void Count(const mycel::AddResult& r, int64_t* stored, int64_t* refused) {
  if (stored) *stored = r.stored;
  if (refused) *refused = static_cast<int64_t>(r.refused.size());
}

// Runs fn, turning an exception into MYCEL_INTERNAL.
template <typename Fn>
mycel_status Guard(Fn fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return Fail(MYCEL_INTERNAL, e.what());
  } catch (...) {
    return Fail(MYCEL_INTERNAL, "unknown exception");
  }
}

}  // namespace

extern "C" {

const char* mycel_version(void) { return mycel::Version(); }

mycel_status mycel_open(const char* socket_path, const char* config_path, mycel_client** out) {
  if (!out) return MYCEL_INVALID_ARGUMENT;
  *out = nullptr;
  mycel_status code = Guard([&] {
    mycel::ClientOptions options;
    if (socket_path) options.socket_path = socket_path;
    if (config_path) options.config_path = config_path;
    auto c = std::make_unique<mycel_client>();
    mycel::Status s = mycel::Client::Open(options, &c->client);
    if (s.ok()) *out = c.release();
    return Done(s);
  });
  tls_open_error = tls_error;
  return code;
}

const char* mycel_open_error(void) { return tls_open_error.c_str(); }

void mycel_close(mycel_client* client) { delete client; }

const char* mycel_last_error(mycel_client*) { return tls_error.c_str(); }

mycel_status mycel_status_get(mycel_client* client, mycel_daemon_status* out) {
  if (!client || !out) return Fail(MYCEL_INVALID_ARGUMENT, "client and out must not be NULL");
  return Guard([&] {
    mycel::DaemonStatus status;
    mycel::Status s = client->client->GetStatus(&status);
    if (s.ok()) ToC(status, out);
    return Done(s);
  });
}

mycel_status mycel_pause(mycel_client* client) {
  if (!client) return Fail(MYCEL_INVALID_ARGUMENT, "client must not be NULL");
  return Guard([&] { return Done(client->client->Pause()); });
}

mycel_status mycel_resume(mycel_client* client) {
  if (!client) return Fail(MYCEL_INVALID_ARGUMENT, "client must not be NULL");
  return Guard([&] { return Done(client->client->Resume()); });
}

mycel_status mycel_predict(mycel_client* client, const float* values, size_t width, mycel_prediction* top,
                           size_t capacity, size_t* count) {
  if (!client || !values || !top || !count || capacity == 0 || capacity > 1 << 20) {
    return Fail(MYCEL_INVALID_ARGUMENT, "client, values, top and count must be set, capacity in [1, 2^20]");
  }
  *count = 0;
  return Guard([&] {
    std::vector<mycel::Prediction> predictions;
    mycel::Status s = client->client->Predict(std::vector<float>(values, values + width),
                                              static_cast<int>(capacity), &predictions);
    if (!s.ok()) return Done(s);
    tls_names.clear();
    for (const auto& p : predictions) tls_names.push_back(p.name);
    *count = std::min(capacity, predictions.size());
    for (size_t i = 0; i < *count; ++i) top[i] = mycel_prediction{predictions[i].label, predictions[i].probability,
                                                                  tls_names[i].c_str()};
    return Done(s);
  });
}

mycel_status mycel_add_examples(mycel_client* client, const float* values, const int64_t* labels, size_t n,
                                size_t width, int64_t* stored, int64_t* refused) {
  if (!client || (n > 0 && (!values || !labels || width == 0))) {
    return Fail(MYCEL_INVALID_ARGUMENT, "client, values and labels must be set, width > 0");
  }
  return Guard([&] {
    std::vector<mycel::Example> batch;
    batch.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      batch.push_back(mycel::Example::Labelled(labels[i], std::vector<float>(values + i * width,
                                                                             values + (i + 1) * width)));
    }
    mycel::AddResult result;
    mycel::Status s = client->client->AddExamples(batch, &result);
    if (s.ok()) Count(result, stored, refused);
    return Done(s);
  });
}

mycel_status mycel_add_text(mycel_client* client, const char* text, int64_t* stored, int64_t* refused) {
  if (!client || !text) return Fail(MYCEL_INVALID_ARGUMENT, "client and text must not be NULL");
  return Guard([&] {
    mycel::AddResult result;
    mycel::Status s = client->client->AddExamples({mycel::Example::Text(text)}, &result);
    if (s.ok()) Count(result, stored, refused);
    return Done(s);
  });
}

mycel_status mycel_watch(mycel_client* client, mycel_watch_fn on_change, void* user, double timeout_s) {
  if (!client || !on_change) return Fail(MYCEL_INVALID_ARGUMENT, "client and on_change must not be NULL");
  return Guard([&] {
    mycel::Status s = client->client->Watch(
        [&](const mycel::DaemonStatus& status) {
          mycel_daemon_status c;
          ToC(status, &c);
          return on_change(&c, user) != 0;
        },
        timeout_s);
    return Done(s);
  });
}

}  // extern "C"
