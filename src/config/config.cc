// TOML → typed options. toml++ and its exceptions stay in this file.
//
// Design: every section is described by a list of Fields (key + reader that
// type-checks, validates and stores the value). ReadTable() walks a TOML table
// in file order and rejects any key that has no Field, so an unknown key can
// never be silently ignored. Adding a section means: a struct in config.h, a
// `XxxFields()` function below, and one row in kSections.

#include "config/config.h"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <tuple>
#include <type_traits>
#include <utility>

#include <toml++/toml.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/coding.h"
#include "common/file_util.h"
#include "common/status.h"

namespace mycel::config {
namespace {

namespace fs = std::filesystem;

constexpr size_t kPublicKeyBytes = 32;  // Ed25519 (crypto_sign_PUBLICKEYBYTES)

// ---------------------------------------------------------------------------
// Error context.

class Parser {
 public:
  Parser(const std::string& source, std::string base_dir)
      : source_(source), base_dir_(std::move(base_dir)) {}

  // "<source>:<line>: <msg>" as InvalidArgument.
  absl::Status Error(uint32_t line, const std::string& msg) const {
    if (line == 0) return absl::InvalidArgumentError(absl::StrCat(source_, ": ", msg));
    return absl::InvalidArgumentError(absl::StrCat(source_, ":", line, ": ", msg));
  }
  // Directory that relative paths in the file are resolved against (absolute).
  const std::string& base_dir() const { return base_dir_; }
  const std::string& source() const { return source_; }

 private:
  const std::string& source_;
  const std::string base_dir_;
};

uint32_t LineOf(const toml::node& n) { return n.source().begin.line; }

// Debian's abseil has its own string_view, which absl::StrCat does not take
// from std::string_view: helpers below pass std::string or const char*.
const char* TypeName(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
  }
}

absl::Status TypeError(const Parser& p, const toml::node& n, const std::string& where,
                       const char* expected) {
  return p.Error(LineOf(n), absl::StrCat(where, ": expected ", expected, ", got ", TypeName(n)));
}

// ---------------------------------------------------------------------------
// Value rules: return "" if the value is acceptable, else what is wrong with it.

template <typename T>
using Rule = std::function<std::string(const T&)>;

Rule<int64_t> IntIn(int64_t lo, int64_t hi) {
  return [lo, hi](const int64_t& v) -> std::string {
    if (v >= lo && v <= hi) return "";
    return absl::StrCat("must be in [", lo, ", ", hi, "] (got ", v, ")");
  };
}

Rule<int64_t> IntAtLeast(int64_t lo) {
  return [lo](const int64_t& v) -> std::string {
    if (v >= lo) return "";
    return absl::StrCat("must be >= ", lo, " (got ", v, ")");
  };
}

// Comparisons are written so that NaN fails every rule.
Rule<double> RealPositive() {
  return [](const double& v) -> std::string {
    if (std::isfinite(v) && v > 0) return "";
    if (!std::isfinite(v)) return absl::StrCat("must be a finite number > 0 (got ", v, ")");
    return absl::StrCat("must be > 0 (got ", v, ")");
  };
}

// [lo, hi] or, with hi_open, [lo, hi).
Rule<double> RealIn(double lo, double hi, bool hi_open) {
  return [lo, hi, hi_open](const double& v) -> std::string {
    if (v >= lo && (hi_open ? v < hi : v <= hi)) return "";
    return absl::StrCat("must be in [", lo, ", ", hi, hi_open ? ")" : "]", " (got ", v, ")");
  };
}

// A duration in seconds: at least 10 ms (shorter ones only spin a core) and
// at most a year (longer ones overflow clock arithmetic).
Rule<double> Seconds() {
  return [](const double& v) -> std::string {
    if (v >= 0.01 && v <= 365.0 * 86400) return "";
    return absl::StrCat("must be a duration in [0.01, 31536000] seconds (got ", v, ")");
  };
}

Rule<std::string> OneOf(std::vector<std::string> allowed) {
  return [allowed = std::move(allowed)](const std::string& v) -> std::string {
    if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return "";
    return absl::StrCat("must be one of ", absl::StrJoin(allowed, ", "), " (got '", v, "')");
  };
}

// Non-empty, no control characters (UTF-8 beyond ASCII is fine).
// A name shown in logs and sent to peers (a node's in every Hello, whose
// request is bounded): printable, at most 64 bytes.
Rule<std::string> PrintableName() {
  return [](const std::string& v) -> std::string {
    if (v.empty()) return "must not be empty";
    if (v.size() > 64) return absl::StrCat("must be at most 64 bytes (got ", v.size(), ")");
    for (size_t i = 0; i < v.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(v[i]);
      if (c < 0x20 || c == 0x7f) {
        return absl::StrCat("must be printable (control character at byte ", i, ")");
      }
    }
    return "";
  };
}

// "host:port": host is a name, an IPv4 address or a bracketed IPv6 address.
std::string CheckHostPort(const std::string& v, int64_t min_port) {
  std::string want = absl::StrCat("must be host:port (got '", v, "')");
  auto colon = v.rfind(':');
  if (colon == std::string::npos || colon == 0) return want;
  std::string host = v.substr(0, colon);
  std::string port = v.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return want;
    for (char c : host.substr(1, host.size() - 2)) {
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.' && c != '%') {
        return want;
      }
    }
  } else {
    for (char c : host) {
      if (c == ':') {
        return absl::StrCat("must be host:port; put an IPv6 address in brackets, as in "
                            "[::1]:7000 (got '", v, "')");
      }
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
        return want;
      }
    }
  }
  if (port.empty() || port.size() > 5) return want;
  for (char c : port) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return want;
  }
  int64_t n = std::stoll(port);
  if (n < min_port || n > 65535) {
    return absl::StrCat("port must be in [", min_port, ", 65535] (got '", v, "')");
  }
  return "";
}

Rule<std::string> HostPort(int64_t min_port) {
  return [min_port](const std::string& v) { return CheckHostPort(v, min_port); };
}

// ---------------------------------------------------------------------------
// Typed readers.

absl::Status ReadInt(const Parser& p, const toml::node& n, const std::string& where,
                     const Rule<int64_t>& rule, int64_t* out) {
  const auto* v = n.as_integer();
  if (v == nullptr) return TypeError(p, n, where, "an integer");
  if (rule) {
    std::string bad = rule(v->get());
    if (!bad.empty()) return p.Error(LineOf(n), absl::StrCat(where, ": ", bad));
  }
  *out = v->get();
  return absl::OkStatus();
}

// Floats may be written as integers (lr = 1); the reverse is a type error.
absl::Status ReadReal(const Parser& p, const toml::node& n, const std::string& where,
                      const Rule<double>& rule, double* out) {
  double d;
  if (const auto* f = n.as_floating_point()) {
    d = f->get();
  } else if (const auto* i = n.as_integer()) {
    d = static_cast<double>(i->get());
  } else {
    return TypeError(p, n, where, "a number");
  }
  if (rule) {
    std::string bad = rule(d);
    if (!bad.empty()) return p.Error(LineOf(n), absl::StrCat(where, ": ", bad));
  }
  *out = d;
  return absl::OkStatus();
}

absl::Status ReadString(const Parser& p, const toml::node& n, const std::string& where,
                        const Rule<std::string>& rule, std::string* out) {
  const auto* s = n.as_string();
  if (s == nullptr) return TypeError(p, n, where, "a string");
  if (rule) {
    std::string bad = rule(s->get());
    if (!bad.empty()) return p.Error(LineOf(n), absl::StrCat(where, ": ", bad));
  }
  *out = s->get();
  return absl::OkStatus();
}

std::string StripTrailingSlashes(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

// Expands ~ and $VARS, then resolves a relative path against the config file's directory.
std::string ResolvePath(const Parser& p, const std::string& raw) {
  std::string expanded = ExpandPath(raw);
  if (expanded.empty()) return expanded;
  fs::path path(expanded);
  if (path.is_relative()) path = fs::path(p.base_dir()) / path;
  return StripTrailingSlashes(path.lexically_normal().string());
}

// ---------------------------------------------------------------------------
// Fields and tables.

// One key of a section: how to read, check and store its value. `where` is the
// prefix of every message about it, e.g. "[training] lr".
struct Field {
  std::string_view key;
  std::function<absl::Status(const Parser&, const toml::node&, const std::string& where)> read;
};

template <typename T>
Field IntField(std::string_view key, T* out, Rule<int64_t> rule = nullptr) {
  static_assert(std::is_integral_v<T>);
  return {key, [out, rule](const Parser& p, const toml::node& n, const std::string& where) {
            int64_t v = 0;
            MYCEL_RETURN_IF_ERROR(ReadInt(p, n, where, rule, &v));
            // Rules bound every narrow field; this only guards a forgotten one.
            if (v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
                (v > 0 && static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<T>::max()))) {
              return p.Error(LineOf(n), absl::StrCat(where, ": out of range (got ", v, ")"));
            }
            *out = static_cast<T>(v);
            return absl::OkStatus();
          }};
}

Field RealField(std::string_view key, double* out, Rule<double> rule) {
  return {key, [out, rule](const Parser& p, const toml::node& n, const std::string& where) {
            return ReadReal(p, n, where, rule, out);
          }};
}

Field StringField(std::string_view key, std::string* out, Rule<std::string> rule = nullptr) {
  return {key, [out, rule](const Parser& p, const toml::node& n, const std::string& where) {
            return ReadString(p, n, where, rule, out);
          }};
}

Field BoolField(std::string_view key, bool* out) {
  return {key, [out](const Parser& p, const toml::node& n, const std::string& where) {
            const auto* b = n.as_boolean();
            if (b == nullptr) return TypeError(p, n, where, "true or false");
            *out = b->get();
            return absl::OkStatus();
          }};
}

// A file-system path: ~ and $VARS expanded, relative paths resolved against
// the config file's directory.
Field PathField(std::string_view key, std::string* out, bool allow_empty) {
  return {key, [out, allow_empty](const Parser& p, const toml::node& n, const std::string& where) {
            std::string raw;
            MYCEL_RETURN_IF_ERROR(ReadString(p, n, where, nullptr, &raw));
            if (raw.empty()) {
              if (allow_empty) {
                out->clear();
                return absl::OkStatus();
              }
              return p.Error(LineOf(n), absl::StrCat(where, ": must not be empty (omit the key "
                                                            "for the default)"));
            }
            std::string resolved = ResolvePath(p, raw);
            if (resolved.empty()) {
              return p.Error(LineOf(n),
                             absl::StrCat(where, ": '", raw, "' expands to an empty path"));
            }
            *out = std::move(resolved);
            return absl::OkStatus();
          }};
}

// Lists are only type-checked here: their values are checked by their owner
// (model::CheckOptions), which names one as "key[i]".
Field IntListField(std::string_view key, std::vector<int64_t>* out) {
  return {key, [=](const Parser& p, const toml::node& n, const std::string& where) {
            const auto* arr = n.as_array();
            if (arr == nullptr) return TypeError(p, n, where, "an array of integers");
            std::vector<int64_t> values;
            for (size_t i = 0; i < arr->size(); ++i) {
              int64_t v = 0;
              MYCEL_RETURN_IF_ERROR(
                  ReadInt(p, *arr->get(i), absl::StrCat(where, "[", i, "]"), nullptr, &v));
              values.push_back(v);
            }
            *out = std::move(values);
            return absl::OkStatus();
          }};
}

Field StringListField(std::string_view key, std::vector<std::string>* out) {
  return {key, [=](const Parser& p, const toml::node& n, const std::string& where) {
            const auto* arr = n.as_array();
            if (arr == nullptr) return TypeError(p, n, where, "an array of strings");
            std::vector<std::string> values;
            for (size_t i = 0; i < arr->size(); ++i) {
              std::string v;
              MYCEL_RETURN_IF_ERROR(
                  ReadString(p, *arr->get(i), absl::StrCat(where, "[", i, "]"), nullptr, &v));
              values.push_back(std::move(v));
            }
            *out = std::move(values);
            return absl::OkStatus();
          }};
}

// Reads every key of `table` through `fields`, in file order (so the first
// error reported is the first in the file). A key without a Field is an error.
absl::Status ReadTable(const Parser& p, const toml::table& table, const std::string& label,
                       const std::vector<Field>& fields) {
  struct Entry {
    uint32_t line, column;
    const toml::key* key;
    const toml::node* value;
  };
  std::vector<Entry> entries;
  for (const auto& [k, v] : table) {
    // A dotted or implicit table may lack a position on its key; fall back to the value's.
    const toml::source_position& pos = k.source().begin ? k.source().begin : v.source().begin;
    entries.push_back({pos.line, pos.column, &k, &v});
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.line, a.column) < std::tie(b.line, b.column);
  });
  for (const Entry& e : entries) {
    const std::string key(e.key->str());
    auto it = std::find_if(fields.begin(), fields.end(),
                           [&](const Field& f) { return f.key == key; });
    if (it == fields.end()) {
      // Keys that moved keep a pointer to their new place.
      const char* moved = label == "[training]" && key == "threads" ? " (moved to [policy] threads)" : "";
      return p.Error(e.line, absl::StrCat("unknown key '", key, "' in ", label, moved));
    }
    MYCEL_RETURN_IF_ERROR(it->read(p, *e.value, absl::StrCat(label, " ", key)));
  }
  return absl::OkStatus();
}

// Line of `key` in `table` if present, else the table's own line (its header).
uint32_t LineOfKey(const toml::table& table, std::string_view key) {
  if (const toml::node* n = table.get(key)) return LineOf(*n);
  return LineOf(table);
}

// ---------------------------------------------------------------------------
// Sections.

// "" or a loopback host:port: what this laptop tells about itself stays on it.
Rule<std::string> LoopbackHostPort() {
  return [](const std::string& v) -> std::string {
    if (v.empty()) return "";
    std::string bad = CheckHostPort(v, 0);
    if (!bad.empty()) return bad;
    std::string host = v.substr(0, v.rfind(':'));
    if (host != "127.0.0.1" && host != "localhost" && host != "[::1]") {
      return "must be a loopback address, 127.0.0.1:PORT or [::1]:PORT (got '" + v + "')";
    }
    return "";
  };
}

std::vector<Field> NodeFields(NodeOptions* o) {
  return {
      StringField("name", &o->name, PrintableName()),
      PathField("state_dir", &o->state_dir, /*allow_empty=*/false),
      // Port 0 lets the OS pick a free port (tests); peers need a fixed one.
      StringField("listen", &o->listen,
                  [](const std::string& v) { return v.empty() ? "" : CheckHostPort(v, 0); }),
      BoolField("dial_out", &o->dial_out),
      StringField("log_level", &o->log_level,
                  OneOf({"trace", "debug", "info", "warn", "error", "off"})),
      PathField("log_file", &o->log_file, /*allow_empty=*/true),
      IntField("log_max_bytes", &o->log_max_bytes, IntIn(4096, int64_t{1} << 40)),
      IntField("log_max_files", &o->log_max_files, IntIn(1, 100)),
      // Metrics say how and when this laptop trains: never off the machine.
      StringField("metrics_listen", &o->metrics_listen, LoopbackHostPort()),
      // The dashboard shows and changes this laptop's state: never off the machine.
      StringField("ui_listen", &o->ui_listen, LoopbackHostPort()),
      BoolField("discover", &o->discover),
  };
}

// The values are checked by model::CheckOptions (ParseModel), their one
// owner; seed's range is the reader's (a TOML integer into a uint64_t).
std::vector<Field> ModelFields(model::ModelOptions* o) {
  return {
      StringField("kind", &o->kind),
      IntListField("input_shape", &o->input_shape),
      IntField("classes", &o->classes),
      IntListField("hidden", &o->hidden),
      IntField("seed", &o->seed, IntAtLeast(0)),
      PathField("path", &o->path, /*allow_empty=*/true),
      StringListField("local_layers", &o->local_layers),
      StringListField("class_names", &o->class_names),
      BoolField("personal_prior", &o->personal_prior),
      IntField("context", &o->context),
      IntField("embedding", &o->embedding),
  };
}

std::vector<Field> TrainingFields(train::TrainingOptions* o) {
  return {
      StringField("optimizer", &o->optimizer, OneOf({"sgd", "adam"})),
      RealField("lr", &o->lr, RealPositive()),
      IntField("lr_decay_steps", &o->lr_decay_steps, IntIn(0, int64_t{1} << 40)),
      RealField("lr_final", &o->lr_final, RealIn(0, 1e6, /*hi_open=*/false)),
      RealField("momentum", &o->momentum, RealIn(0, 1, /*hi_open=*/true)),
      IntField("batch_size", &o->batch_size, IntIn(1, 65536)),
      RealField("validation_fraction", &o->validation_fraction, RealIn(0, 0.9, false)),
      RealField("replay_fraction", &o->replay_fraction, RealIn(0, 1, false)),
      StringField("replay_pool", &o->replay_pool, OneOf({"uniform", "balanced"})),
      IntField("max_examples", &o->max_examples, IntAtLeast(100)),
      RealField("checkpoint_interval_s", &o->checkpoint_interval_s, Seconds()),
      RealField("eval_interval_s", &o->eval_interval_s, Seconds()),
      IntField("max_eval_examples", &o->max_eval_examples, IntAtLeast(1)),
      BoolField("rest", &o->rest),
      IntField("rest_patience", &o->rest_patience, IntIn(1, 1000000)),
      RealField("rest_max_s", &o->rest_max_s, Seconds()),
      RealField("drift_guard_drop", &o->drift_guard_drop, RealIn(0, 1, /*hi_open=*/false)),
      IntField("drift_guard_window", &o->drift_guard_window, IntIn(1, 1000000)),
  };
}

// The merge's keys are read here and checked by federation::CheckOptions
// (ParseFederation), their one owner; the schedule's keys are checked here.
std::vector<Field> FederationFields(FederationSection* o) {
  return {
      RealField("round_interval_s", &o->round_interval_s, Seconds()),
      IntField("local_steps", &o->local_steps, IntIn(0, 1000000)),
      StringField("merge", &o->merge),
      RealField("mixing", &o->mixing, nullptr),
      RealField("drift_correction", &o->drift_correction, nullptr),
      StringField("codec", &o->codec),
      IntField("max_stale_rounds", &o->max_stale_rounds),
      StringField("robust", &o->robust),
      BoolField("trust", &o->trust),
      IntField("trust_every", &o->trust_every, IntIn(1, 1000000)),
      IntField("trust_examples", &o->trust_examples, IntIn(1, 65536)),
      RealField("trust_tolerance", &o->trust_tolerance, nullptr),
      RealField("max_delta_norm", &o->max_delta_norm, nullptr),
      RealField("pull_timeout_s", &o->pull_timeout_s, Seconds()),
      RealField("max_backoff_s", &o->max_backoff_s, Seconds()),
  };
}

std::vector<Field> PolicyFields(PolicySection* o) {
  return {
      {"on_battery", [o](const Parser& p, const toml::node& n, const std::string& where) {
         std::string v;
         MYCEL_RETURN_IF_ERROR(ReadString(p, n, where, OneOf({"pause", "continue"}), &v));
         o->pause_on_battery = v == "pause";
         return absl::OkStatus();
       }},
      RealField("max_cpu_percent", &o->max_cpu_percent, RealIn(0, 100, /*hi_open=*/false)),
      IntField("threads", &o->threads, IntIn(1, 256)),
      BoolField("idle_only", &o->idle_only),
      StringField("active_hours", &o->active_hours, [](const std::string& v) -> std::string {
        if (v.empty() || train::ActiveHoursWindow(v)) return "";
        return "must be \"HH:MM-HH:MM\" (got \"" + v + "\")";
      }),
      PathField("power_supply_dir", &o->power_supply_dir, /*allow_empty=*/false),
      BoolField("gossip_when_held", &o->gossip_when_held),
  };
}

std::vector<Field> PeerFields(PeerOptions* o) {
  return {
      StringField("name", &o->name, PrintableName()),
      StringField("address", &o->address, HostPort(1)),
      BoolField("dials_in", &o->dials_in),
      StringField("public_key", &o->public_key_b64),
  };
}

absl::StatusOr<const toml::table*> AsTable(const Parser& p, const toml::node& n,
                                           const std::string& label) {
  const toml::table* t = n.as_table();
  if (t == nullptr) return TypeError(p, n, label, "a table");
  return t;
}

absl::Status ParseNode(const Parser& p, const toml::node& n, Config* c) {
  MYCEL_ASSIGN_OR_RETURN(const toml::table* t, AsTable(p, n, "[node]"));
  MYCEL_RETURN_IF_ERROR(ReadTable(p, *t, "[node]", NodeFields(&c->node)));
  const NodeOptions& o = c->node;
  // Discovery announces where this node can be called: it must listen.
  if (o.discover && (o.listen.empty() || o.dial_out)) {
    return p.Error(LineOfKey(*t, "discover"),
                   o.listen.empty() ? "[node] discover: needs [node] listen (it announces the peer port)"
                                    : "[node] discover: not with dial_out (it announces a port it cannot be "
                                      "called on)");
  }
  return absl::OkStatus();
}

// The line of an OptionProblem's key: the key's own, or its value's for
// "key[i]"; a key left out is wrong only for what `kind` asks of it (a
// torchscript model needs a path), so the line of kind, else the table's.
uint32_t LineOfProblem(const toml::table& table, const std::string& key) {
  const size_t bracket = key.find('[');
  if (bracket != std::string::npos) {
    const std::string list = key.substr(0, bracket);
    const size_t i = std::strtoul(key.c_str() + bracket + 1, nullptr, 10);
    const toml::node* values = table.get(list);
    if (values != nullptr && values->is_array() && i < values->as_array()->size()) {
      return LineOf(*values->as_array()->get(i));
    }
    return LineOfKey(table, list);
  }
  return table.contains(key) ? LineOfKey(table, key) : LineOfKey(table, "kind");
}

absl::Status ParseModel(const Parser& p, const toml::node& n, Config* c) {
  MYCEL_ASSIGN_OR_RETURN(const toml::table* t, AsTable(p, n, "[model]"));
  model::ModelOptions& m = c->model;
  MYCEL_RETURN_IF_ERROR(ReadTable(p, *t, "[model]", ModelFields(&m)));
  if (std::optional<OptionProblem> bad = model::CheckOptions(m)) {
    return p.Error(LineOfProblem(*t, bad->key), absl::StrCat("[model] ", bad->key, ": ", bad->why));
  }
  // What only a file can say: the scripted module is there to be read.
  if (m.kind == "torchscript") {
    struct stat st;
    if (::stat(m.path.c_str(), &st) != 0) {
      return p.Error(LineOfKey(*t, "path"), absl::StrCat("[model] path: ", m.path, ": ",
                                                          std::strerror(errno)));
    }
    if (!S_ISREG(st.st_mode)) {
      return p.Error(LineOfKey(*t, "path"),
                     absl::StrCat("[model] path: ", m.path, " is not a regular file"));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseTraining(const Parser& p, const toml::node& n, Config* c) {
  MYCEL_ASSIGN_OR_RETURN(const toml::table* t, AsTable(p, n, "[training]"));
  MYCEL_RETURN_IF_ERROR(ReadTable(p, *t, "[training]", TrainingFields(&c->training)));
  const train::TrainingOptions& o = c->training;
  // A continual learner must keep learning after the decay.
  if (o.lr_decay_steps > 0 && (o.lr_final <= 0 || o.lr_final > o.lr)) {
    return p.Error(LineOfKey(*t, "lr_final"),
                   absl::StrCat("[training] lr_final: with lr_decay_steps it must be in (0, lr = ", o.lr,
                                "] (got ", o.lr_final, ")"));
  }
  return absl::OkStatus();
}

absl::Status ParsePolicy(const Parser& p, const toml::node& n, Config* c) {
  MYCEL_ASSIGN_OR_RETURN(const toml::table* t, AsTable(p, n, "[policy]"));
  MYCEL_RETURN_IF_ERROR(ReadTable(p, *t, "[policy]", PolicyFields(&c->policy)));
  if (c->policy.max_cpu_percent <= 0) {
    return p.Error(LineOfKey(*t, "max_cpu_percent"), "[policy] max_cpu_percent: must be > 0 (got 0)");
  }
  return absl::OkStatus();
}

absl::Status ParseFederation(const Parser& p, const toml::node& n, Config* c) {
  MYCEL_ASSIGN_OR_RETURN(const toml::table* t, AsTable(p, n, "[federation]"));
  MYCEL_RETURN_IF_ERROR(ReadTable(p, *t, "[federation]", FederationFields(&c->federation)));
  if (std::optional<OptionProblem> bad = federation::CheckOptions(c->federation)) {
    return p.Error(LineOfKey(*t, bad->key), absl::StrCat("[federation] ", bad->key, ": ", bad->why));
  }
  return absl::OkStatus();
}

absl::Status ParsePeers(const Parser& p, const toml::node& n, Config* c) {
  const toml::array* arr = n.as_array();
  if (arr == nullptr || !(arr->empty() || arr->is_array_of_tables())) {
    return p.Error(LineOf(n), absl::StrCat("peers: expected an array of tables ([[peers]]), got ",
                                           TypeName(n)));
  }
  // Name and key → where they are already used: earlier tables of this
  // file, or of the files read before it (the config, then drop-ins).
  std::map<std::string, std::string> names, keys;
  for (const PeerOptions& seen : c->peers) {
    names[seen.name] = absl::StrCat("'", seen.name, "' at ", seen.where);
    keys[seen.public_key] = absl::StrCat("'", seen.name, "' at ", seen.where);
  }
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table& t = *arr->get(i)->as_table();
    const std::string label = absl::StrCat("[[peers]] #", i + 1);
    PeerOptions peer;
    MYCEL_RETURN_IF_ERROR(ReadTable(p, t, label, PeerFields(&peer)));
    for (const char* required : {"name", "public_key"}) {
      if (!t.contains(required)) {
        return p.Error(LineOf(t), absl::StrCat(label, ": missing key '", required, "'"));
      }
    }
    // Where to call it, or that it calls us: exactly one.
    if (peer.dials_in == t.contains("address")) {
      return p.Error(LineOf(t), absl::StrCat(label, peer.dials_in
                                                        ? ": 'address' and 'dials_in = true' both given: a "
                                                          "neighbour that dials in is never called"
                                                        : ": missing key 'address' (or 'dials_in = true' for a "
                                                          "neighbour that cannot be called, behind NAT)"));
    }
    const uint32_t key_line = LineOfKey(t, "public_key");
    absl::StatusOr<std::string> decoded = Base64Decode(peer.public_key_b64);
    if (!decoded.ok()) {
      return p.Error(key_line, absl::StrCat(label, " public_key: not valid base64 (expected the "
                                                   "44-character key printed by `mycel id`)"));
    }
    std::string raw = *std::move(decoded);
    if (raw.size() != kPublicKeyBytes) {
      return p.Error(key_line, absl::StrCat(label, " public_key: must be the base64 of a ",
                                            kPublicKeyBytes, "-byte Ed25519 public key (decoded to ",
                                            raw.size(), " bytes)"));
    }
    peer.public_key = std::move(raw);
    const uint32_t name_line = LineOfKey(t, "name");
    if (auto it = names.find(peer.name); it != names.end()) {
      return p.Error(name_line, absl::StrCat(label, " name: '", peer.name, "' is already used by ", it->second));
    }
    if (auto it = keys.find(peer.public_key); it != keys.end()) {
      return p.Error(key_line, absl::StrCat(label, " public_key: same key as ", it->second));
    }
    peer.where = absl::StrCat(p.source(), ":", LineOf(t));
    names[peer.name] = absl::StrCat("'", peer.name, "' at ", peer.where);
    keys[peer.public_key] = names[peer.name];
    c->peers.push_back(std::move(peer));
  }
  return absl::OkStatus();
}

struct Section {
  std::string_view name;
  absl::Status (*parse)(const Parser&, const toml::node&, Config*);
};

const Section kSections[] = {
    {"node", ParseNode},
    {"model", ParseModel},
    {"training", ParseTraining},
    {"federation", ParseFederation},
    {"policy", ParsePolicy},
    {"peers", ParsePeers},
};

// ---------------------------------------------------------------------------
// Paths.

std::string HomeDir() {
  if (const char* home = std::getenv("HOME"); home != nullptr && home[0] != '\0') return home;
  struct passwd pw, *result = nullptr;
  char buf[4096];
  if (::getpwuid_r(::getuid(), &pw, buf, sizeof(buf), &result) == 0 && result != nullptr &&
      result->pw_dir != nullptr) {
    return result->pw_dir;
  }
  return "/";
}

// The XDG base directory in `var` if set to an absolute path (the spec says
// relative values are invalid and must be ignored), else $HOME/`fallback`.
std::string XdgDir(const char* var, const char* fallback) {
  if (const char* v = std::getenv(var); v != nullptr && v[0] == '/') {
    return StripTrailingSlashes(v);
  }
  return StripTrailingSlashes(HomeDir()) + "/" + fallback;
}

std::string CurrentDir() {
  std::error_code ec;
  fs::path cwd = fs::current_path(ec);
  return ec ? "/" : cwd.string();
}

// Directory that relative paths in `source` are resolved against.
std::string BaseDirOf(const std::string& source) {
  fs::path src(source);
  fs::path dir = source.find('/') == std::string::npos ? fs::path(CurrentDir()) : src.parent_path();
  if (dir.empty()) dir = "/";
  if (dir.is_relative()) dir = fs::path(CurrentDir()) / dir;
  return StripTrailingSlashes(dir.lexically_normal().string());
}

std::string Join(const std::string& dir, const std::string& name) {
  if (!dir.empty() && dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

}  // namespace

std::string Config::SocketPath() const { return Join(node.state_dir, "control.sock"); }
std::string Config::HistoryPath() const { return Join(node.state_dir, "history.db"); }
std::string Config::StorePath() const { return Join(node.state_dir, "examples.db"); }
std::string Config::CheckpointDir() const { return Join(node.state_dir, "checkpoints"); }
std::string Config::IdentityPath() const { return Join(node.state_dir, "identity.key"); }

std::string DefaultConfigPath() {
  return XdgDir("XDG_CONFIG_HOME", ".config") + "/mycel/mycel.toml";
}

std::string DefaultStateDir() { return XdgDir("XDG_STATE_HOME", ".local/state") + "/mycel"; }

Config DefaultConfig() {
  Config c;
  c.node.state_dir = DefaultStateDir();
  return c;
}

namespace {

// TOML text → table; a syntax error names source:line:column.
absl::StatusOr<toml::table> ParseToml(std::string_view text, const std::string& source) {
  try {
    return toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    const auto& pos = e.source().begin;
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", pos.line, ":", pos.column, ": syntax error: ", std::string(e.description())));
  }
}

}  // namespace

absl::StatusOr<Config> ParseConfig(std::string_view text, const std::string& source) {
  MYCEL_ASSIGN_OR_RETURN(toml::table root, ParseToml(text, source));

  const Parser p(source, BaseDirOf(source));
  Config config;
  config.path = source;

  // Sections in file order, so the first error reported is the first in the file.
  std::vector<std::pair<const toml::key*, const toml::node*>> entries;
  for (const auto& [k, v] : root) entries.emplace_back(&k, &v);
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    const auto& pa = a.second->source().begin;
    const auto& pb = b.second->source().begin;
    return std::tie(pa.line, pa.column) < std::tie(pb.line, pb.column);
  });
  for (const auto& [key, node] : entries) {
    const std::string name(key->str());
    auto it = std::find_if(std::begin(kSections), std::end(kSections),
                           [&](const Section& s) { return s.name == name; });
    uint32_t line = key->source().begin.line ? key->source().begin.line : LineOf(*node);
    if (it == std::end(kSections)) {
      if (node->is_table() || node->is_array_of_tables()) {
        return p.Error(line, absl::StrCat("unknown section [", name, "]"));
      }
      return p.Error(line, absl::StrCat("unknown top-level key '", name,
                                        "' (settings belong in a section such as [node])"));
    }
    MYCEL_RETURN_IF_ERROR(it->parse(p, *node, &config));
  }

  if (config.node.state_dir.empty()) config.node.state_dir = DefaultStateDir();
  return config;
}

namespace {

// Adds the [[peers]] of every *.toml in `dir` (absent: none), in name order.
absl::Status LoadPeerDropIns(const std::string& dir, Config* config) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::OkStatus();
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    // Not hidden files (an editor's lock or backup), not what is not a file.
    const std::string leaf = entry.path().filename().string();
    std::error_code file_ec;
    if (leaf[0] != '.' && entry.path().extension() == ".toml" && entry.is_regular_file(file_ec)) {
      files.push_back(entry.path().string());
    }
  }
  if (ec) return ErrnoStatus(ec.value(), "listing the peers directory", dir);
  std::sort(files.begin(), files.end());
  for (const std::string& file : files) {
    MYCEL_ASSIGN_OR_RETURN(std::string text, Env::Default()->ReadFile(file));
    MYCEL_ASSIGN_OR_RETURN(toml::table root, ParseToml(text, file));
    const Parser p(file, BaseDirOf(file));
    for (const auto& [key, node] : root) {
      if (key.str() != "peers") {
        return p.Error(key.source().begin.line,
                       absl::StrCat("'", std::string(key.str()),
                                    "' in a peers drop-in: only [[peers]] tables belong here (settings go in the "
                                    "config file)"));
      }
      MYCEL_RETURN_IF_ERROR(ParsePeers(p, node, config));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Config> LoadConfig(const std::string& path) {
  // Absolute, so relative paths inside resolve the same whatever the daemon's cwd later is.
  std::string abs_path = path;
  if (!abs_path.empty() && abs_path[0] != '/') abs_path = Join(CurrentDir(), abs_path);

  struct stat st;
  if (::stat(abs_path.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat("config file ", abs_path, " does not exist"));
    }
    return ErrnoStatus(err, "reading config file", abs_path);
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("config file ", abs_path, " is not a regular file"));
  }
  MYCEL_ASSIGN_OR_RETURN(std::string text, Env::Default()->ReadFile(abs_path));
  MYCEL_ASSIGN_OR_RETURN(Config config, ParseConfig(text, abs_path));
  MYCEL_RETURN_IF_ERROR(LoadPeerDropIns(PeersDropInDir(abs_path), &config));
  return config;
}

std::string PeersDropInDir(const std::string& config_path) {
  fs::path p(config_path);
  return (p.parent_path() / (p.stem().string() + ".peers.d")).string();
}

std::string FreePeerName(const Config& config, const std::string& base) {
  const std::string dir = PeersDropInDir(config.path);
  for (int i = 1;; ++i) {
    const std::string name = i == 1 ? base : absl::StrCat(base, "-", i);
    const bool used = std::any_of(config.peers.begin(), config.peers.end(),
                                  [&](const PeerOptions& p) { return p.name == name; });
    struct stat st;
    if (!used && ::lstat((dir + "/" + name + ".toml").c_str(), &st) != 0) return name;
  }
}

absl::StatusOr<std::string> PinPeer(const Config& config, const std::string& name, const std::string& key_b64,
                                    const std::string& address, const std::string& own_key, const std::string& how) {
  auto refuse = [](const std::string& why) { return absl::InvalidArgumentError(why); };
  if (config.path.empty()) {
    return refuse("no config file (" + DefaultConfigPath() +
                  " does not exist): pinned peers live beside one; create it with [node] listen = \"0.0.0.0:7000\"");
  }
  const bool name_ok = !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
  if (!name_ok || name == "." || name == "..") {
    return refuse("peer name '" + name + "': use 1-64 of A-Z a-z 0-9 . _ - (it names a file)");
  }
  if (!address.empty() && !CheckHostPort(address, 1).empty()) {
    return refuse("address '" + address + "': expected host:port, the port in [1, 65535]");
  }
  const absl::StatusOr<std::string> decoded = Base64Decode(key_b64);
  if (!decoded.ok() || decoded->size() != kPublicKeyBytes) {
    return refuse("key '" + key_b64 + "': expected the 44-character public key that `mycel id` prints");
  }
  const std::string& key = *decoded;
  if (key == own_key) return refuse("that is this node's own key");
  for (const PeerOptions& p : config.peers) {
    if (p.name == name) return refuse("'" + name + "' is already pinned at " + p.where + ": choose another name");
    if (p.public_key == key) return refuse("that key is already pinned as '" + p.name + "' at " + p.where);
  }
  const std::string dir = PeersDropInDir(config.path);
  const std::string file = dir + "/" + name + ".toml";
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError("cannot create " + dir + ": " + std::strerror(errno));
  }
  if (struct stat st; ::lstat(file.c_str(), &st) == 0) {
    return refuse(file + " exists already (a hand-written drop-in?): pin this peer under another name");
  }
  const std::string where_line = address.empty() ? "dials_in = true  # it calls this node; it cannot be called\n"
                                                 : "address = \"" + address + "\"\n";
  const std::string text = "# Pinned by `mycel peers " + how + "`; `mycel peers remove " + name +
                           "` unpins it. Managed by mycel: edit the config file instead.\n[[peers]]\nname = \"" +
                           name + "\"\n" + where_line + "public_key = \"" + key_b64 + "\"\n";
  MYCEL_RETURN_IF_ERROR(Env::Default()->WriteFileAtomically(file, text));
  if (auto check = LoadConfig(config.path); !check.ok()) {
    ::unlink(file.c_str());
    return refuse(std::string(check.status().message()));
  }
  return file;
}

}  // namespace mycel::config
