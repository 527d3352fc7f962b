// How `mycel --json` writes its documents.
#include "cli/json.h"

#include <cmath>
#include <cstdio>

namespace mycel::cli {

std::string ValidUtf8(const std::string& in) {
  std::string out;
  size_t i = 0;
  while (i < in.size()) {
    unsigned char c = static_cast<unsigned char>(in[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 && c >= 0xc2 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e && c <= 0xf4 ? 4 : 0;
    bool ok = len > 0 && i + len <= in.size();
    for (size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(in[i + k]) >> 6) == 0x2;
    if (ok && len == 3) {
      unsigned char c1 = static_cast<unsigned char>(in[i + 1]);
      ok = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0);
    }
    if (ok && len == 4) {
      unsigned char c1 = static_cast<unsigned char>(in[i + 1]);
      ok = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
    }
    if (ok) {
      out.append(in, i, len);
      i += len;
    } else {
      out += "\xef\xbf\xbd";
      i += 1;
    }
  }
  return out;
}

namespace {

// `s` as a JSON string. ValidUtf8 left nothing for dump() to throw on;
// replace is a second guard.
std::string Quoted(const std::string& s) {
  return Json(ValidUtf8(s)).dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Appends `v` to `out`. nlohmann writes the strings (escaped, after
// ValidUtf8 has made them valid UTF-8: a byte it cannot read becomes one
// U+FFFD, where nlohmann's own replacement would take a broken sequence as
// one), the integers, booleans and nulls. The doubles are written here, as
// "%.10g" did before there was nlohmann: its shortest round-trip form is
// the same value but not always the same text (7.7183448629999996 for
// 7.718344863, 10000000000.0 for 1e+10), and scripts compare the text.
void Write(const Json& v, std::string* out) {
  switch (v.type()) {
    case Json::value_t::object: {
      *out += '{';
      for (auto item = v.begin(); item != v.end(); ++item) {
        if (item != v.begin()) *out += ',';
        *out += Quoted(item.key());
        *out += ':';
        Write(item.value(), out);
      }
      *out += '}';
      return;
    }
    case Json::value_t::array: {
      *out += '[';
      for (auto item = v.begin(); item != v.end(); ++item) {
        if (item != v.begin()) *out += ',';
        Write(*item, out);
      }
      *out += ']';
      return;
    }
    case Json::value_t::string:
      *out += Quoted(v.get_ref<const std::string&>());
      return;
    case Json::value_t::number_float: {
      const double d = v.get<double>();
      if (!std::isfinite(d)) {
        *out += "null";
        return;
      }
      char text[32];
      std::snprintf(text, sizeof(text), "%.10g", d);
      *out += text;
      return;
    }
    default:  // integers, booleans, null
      *out += v.dump();
      return;
  }
}

}  // namespace

std::string JsonLine(const Json& doc) {
  std::string out;
  Write(doc, &out);
  return out;
}

void PrintJson(const Json& doc) { std::printf("%s\n", JsonLine(doc).c_str()); }

}  // namespace mycel::cli
