#include "metrics/exposition.h"

#include <cmath>
#include <cstdio>

namespace mycel::metrics {
namespace {

// Label values escape backslash, double quote and newline; help text
// escapes backslash and newline.
void AppendEscaped(std::string* out, std::string_view s, bool quote) {
  for (char c : s) {
    if (c == '\\') {
      *out += "\\\\";
    } else if (c == '\n') {
      *out += "\\n";
    } else if (c == '"' && quote) {
      *out += "\\\"";
    } else {
      *out += c;
    }
  }
}

void AppendValue(std::string* out, double v) {
  if (std::isnan(v)) {
    *out += "NaN";
  } else if (std::isinf(v)) {
    *out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.17g", v);
    *out += buf;
  }
}

}  // namespace

void Exposition::Family(std::string_view name, std::string_view type, std::string_view help) {
  name_ = std::string(name);
  out_ += "# HELP ";
  out_ += name_;
  out_ += ' ';
  AppendEscaped(&out_, help, /*quote=*/false);
  out_ += "\n# TYPE ";
  out_ += name_;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void Exposition::Sample(double value, const Labels& labels) {
  out_ += name_;
  if (!labels.empty()) {
    out_ += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      if (i) out_ += ',';
      out_ += labels[i].first;
      out_ += "=\"";
      AppendEscaped(&out_, labels[i].second, /*quote=*/true);
      out_ += '"';
    }
    out_ += '}';
  }
  out_ += ' ';
  AppendValue(&out_, value);
  out_ += '\n';
}

std::string Exposition::Take() {
  name_.clear();
  return std::move(out_);
}

}  // namespace mycel::metrics
