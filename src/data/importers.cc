#include "data/importers.h"

#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/coding.h"
#include "common/status.h"

namespace mycel::data {
namespace {

// Fashion-MNIST's largest file inflates to 47 MB; anything past 4 GiB is a
// zip bomb or a mistake, not training data.
constexpr uint64_t kMaxDecompressedBytes = uint64_t{4} << 30;

bool HasGzipMagic(std::string_view b) {
  return b.size() >= 2 && static_cast<uint8_t>(b[0]) == 0x1f && static_cast<uint8_t>(b[1]) == 0x8b;
}

// IDX magic: two zero bytes, a type code, the number of dimensions.
// Type codes from yann.lecun.com/exdb/mnist: 08 u8, 09 i8, 0B i16, 0C i32, 0D f32, 0E f64.
bool HasIdxMagic(std::string_view b) {
  if (b.size() < 4 || b[0] != 0 || b[1] != 0) return false;
  uint8_t type = static_cast<uint8_t>(b[2]);
  uint8_t dims = static_cast<uint8_t>(b[3]);
  bool known = type == 0x08 || type == 0x09 || (type >= 0x0B && type <= 0x0E);
  return known && dims >= 1;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         absl::AsciiStrToLower(std::string(s.substr(s.size() - suffix.size()))) == suffix;
}

// Name without a trailing ".gz", lower-cased, for extension checks.
std::string BaseName(const std::string& name) {
  std::string lower = absl::AsciiStrToLower(name);
  if (EndsWith(lower, ".gz")) lower.resize(lower.size() - 3);
  return lower;
}

// Returns the offset of the first byte of the first invalid UTF-8 sequence,
// or npos. Follows RFC 3629 / Unicode Table 3-7: no overlong forms, no
// surrogates (U+D800..DFFF), nothing above U+10FFFF, no truncated sequences.
// With `allow_truncated_tail`, a sequence cut off by the end of `s` is fine
// (used when sniffing a prefix of a file).
size_t FirstInvalidUtf8(std::string_view s, bool allow_truncated_tail = false) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    uint8_t c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;        // overlong
      else if (c == 0xED) hi = 0x9F;   // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;        // overlong
      else if (c == 0xF4) hi = 0x8F;   // > U+10FFFF
    } else {
      return i;  // continuation byte without lead, C0/C1 overlong, F5..FF
    }
    for (size_t k = 1; k < len; ++k) {
      if (i + k >= n) return allow_truncated_tail ? std::string_view::npos : i;
      uint8_t b = p[i + k];
      uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (b < l || b > h) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

std::string ShapeDescription(const ExampleShape& shape) {
  if (shape.text) return absl::StrCat("a text model (windows of ", shape.width, " bytes)");
  return absl::StrCat("a model that takes ", shape.width, " values and ", shape.classes, " classes");
}

// ---------------------------------------------------------------- idx

struct IdxFile {
  std::string name;
  std::vector<uint32_t> dims;
  std::string bytes;      // decompressed file
  size_t body_offset = 0; // first value byte
};

uint32_t ReadBE32(const std::string& b, size_t off) {
  const auto* p = reinterpret_cast<const uint8_t*>(b.data()) + off;
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

absl::StatusOr<IdxFile> ParseIdx(const NamedBlob& file) {
  IdxFile idx;
  idx.name = file.name;
  MYCEL_ASSIGN_OR_RETURN(idx.bytes, MaybeGunzip(file.bytes, file.name));
  const std::string& b = idx.bytes;
  if (b.empty()) return absl::InvalidArgumentError(absl::StrCat(file.name, ": file is empty"));
  if (b.size() < 4 || b[0] != 0 || b[1] != 0) {
    std::string magic;
    for (size_t i = 0; i < std::min<size_t>(4, b.size()); ++i) {
      absl::StrAppend(&magic, absl::Hex(static_cast<uint8_t>(b[i]), absl::kZeroPad2));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        file.name, ": not an IDX file (magic 0x", magic, ", expected 0x00000803 images or 0x00000801 labels)"));
  }
  uint8_t type = static_cast<uint8_t>(b[2]);
  uint8_t ndims = static_cast<uint8_t>(b[3]);
  if (type != 0x08) {
    return absl::InvalidArgumentError(absl::StrCat(
        file.name, ": IDX data type 0x", absl::Hex(type, absl::kZeroPad2),
        " is not supported (only unsigned bytes, 0x08)"));
  }
  if (ndims == 0) {
    return absl::InvalidArgumentError(absl::StrCat(file.name, ": IDX header has 0 dimensions"));
  }
  idx.body_offset = 4 + 4 * size_t{ndims};
  if (b.size() < idx.body_offset) {
    return absl::InvalidArgumentError(absl::StrCat(file.name, ": truncated at byte offset ", b.size(),
                                                   ": the header of ", ndims, " dimensions needs ",
                                                   idx.body_offset, " bytes"));
  }
  for (size_t d = 0; d < ndims; ++d) idx.dims.push_back(ReadBE32(b, 4 + 4 * d));
  return idx;
}

std::string DimsText(const std::vector<uint32_t>& dims, size_t from) {
  return absl::StrJoin(dims.begin() + static_cast<std::ptrdiff_t>(from), dims.end(), "x");
}

// Checks that the body holds exactly the values the header announces.
absl::Status CheckIdxBody(const IdxFile& idx, const std::string& what) {
  // Product with overflow guard: anything past the file size is truncated anyway.
  uint64_t need = 1;
  bool overflow = false;
  for (uint32_t d : idx.dims) {
    if (d != 0 && need > std::numeric_limits<uint64_t>::max() / d) overflow = true;
    need *= d;
  }
  uint64_t have = idx.bytes.size() - idx.body_offset;
  if (overflow || need > have) {
    return absl::InvalidArgumentError(absl::StrCat(
        idx.name, ": truncated at byte offset ", idx.bytes.size(), ": header says ", what, " (",
        overflow ? std::string("more than 2^64") : absl::StrCat(need), " bytes after the ",
        idx.body_offset, "-byte header) but only ", have, " bytes follow"));
  }
  if (need < have) {
    return absl::InvalidArgumentError(absl::StrCat(idx.name, ": ", have - need,
                                                   " unexpected bytes after the data at byte offset ",
                                                   idx.body_offset + need, " (header says ", what, ")"));
  }
  return absl::OkStatus();
}

// `labels` null: the images alone, each with label -1 (inputs to predict).
absl::Status ImportIdxPair(const IdxFile& images, const IdxFile* labels_or_null, const ExampleShape& shape,
                           std::vector<Example>* out) {
  const uint64_t n = images.dims[0];
  MYCEL_RETURN_IF_ERROR(CheckIdxBody(images, absl::StrCat(n, " images of ", DimsText(images.dims, 1))));
  uint64_t width = 1;  // saturates: with 0 images the dims are unchecked by the body size
  for (size_t d = 1; d < images.dims.size(); ++d) {
    uint32_t dim = images.dims[d];
    width = dim != 0 && width > std::numeric_limits<uint64_t>::max() / dim
                ? std::numeric_limits<uint64_t>::max()
                : width * dim;
  }
  if (width != static_cast<uint64_t>(shape.width)) {
    std::string dims = images.dims.size() == 2 ? absl::StrCat("have ", width, " values")
                                               : absl::StrCat("are ", DimsText(images.dims, 1), " = ",
                                                              width, " values");
    return absl::InvalidArgumentError(
        absl::StrCat(images.name, ": images ", dims, " but the model takes ", shape.width));
  }
  const char* px = images.bytes.data() + images.body_offset;
  if (labels_or_null == nullptr) {
    out->reserve(out->size() + n);
    for (uint64_t i = 0; i < n; ++i) {
      Example e;
      e.dtype = DType::kU8;
      e.data.assign(px + i * width, width);
      out->push_back(std::move(e));
    }
    return absl::OkStatus();
  }
  const IdxFile& labels = *labels_or_null;
  MYCEL_RETURN_IF_ERROR(CheckIdxBody(labels, absl::StrCat(labels.dims[0], " labels")));
  if (labels.dims[0] != n) {
    return absl::InvalidArgumentError(absl::StrCat(images.name, ": ", n, " images but ", labels.name, ": ",
                                                   labels.dims[0], " labels"));
  }
  const auto* lab = reinterpret_cast<const uint8_t*>(labels.bytes.data()) + labels.body_offset;
  for (uint64_t i = 0; i < n; ++i) {
    if (lab[i] >= shape.classes) {
      return absl::InvalidArgumentError(absl::StrCat(labels.name, ": label ", lab[i], " at index ", i,
                                                     " is outside [0, ", shape.classes, ")"));
    }
  }
  out->reserve(out->size() + n);
  for (uint64_t i = 0; i < n; ++i) {
    Example e;
    e.label = lab[i];
    e.dtype = DType::kU8;
    e.data.assign(px + i * width, width);
    out->push_back(std::move(e));
  }
  return absl::OkStatus();
}

absl::Status ImportIdx(const std::vector<const NamedBlob*>& files, const ExampleShape& shape, bool unlabelled,
                       std::vector<Example>* out) {
  std::vector<IdxFile> images, labels;
  for (const NamedBlob* f : files) {
    if (shape.text) {
      return absl::InvalidArgumentError(absl::StrCat(
          f->name, ": IDX image data cannot train a text model; give text files (format text)"));
    }
    MYCEL_ASSIGN_OR_RETURN(IdxFile idx, ParseIdx(*f));
    (idx.dims.size() == 1 ? labels : images).push_back(std::move(idx));
  }
  if (unlabelled && labels.empty()) {
    for (IdxFile& f : images) {
      MYCEL_RETURN_IF_ERROR(ImportIdxPair(f, nullptr, shape, out));
      std::string().swap(f.bytes);
    }
    return absl::OkStatus();
  }
  if (images.size() != labels.size()) {
    const std::vector<IdxFile>& more = images.size() > labels.size() ? images : labels;
    const IdxFile& extra = more[std::min(images.size(), labels.size())];
    return absl::InvalidArgumentError(absl::StrCat(
        extra.name, ": IDX ", images.size() > labels.size() ? "images file has no labels file"
                                                             : "labels file has no images file",
        " to pair with (", images.size(), " image files, ", labels.size(), " label files)"));
  }
  for (size_t i = 0; i < images.size(); ++i) {
    MYCEL_RETURN_IF_ERROR(ImportIdxPair(images[i], &labels[i], shape, out));
    // Free the decompressed buffers as we go.
    std::string().swap(images[i].bytes);
    std::string().swap(labels[i].bytes);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- csv

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Strict float: the whole field must be one number (std::from_chars, plus an
// optional leading '+', which from_chars does not take).
enum class NumberParse { kOk, kNotANumber, kOutOfRange };
NumberParse ParseFloatDetailed(std::string_view f, float* out) {
  if (!f.empty() && f.front() == '+') f.remove_prefix(1);
  if (f.empty()) return NumberParse::kNotANumber;
  auto [ptr, ec] = std::from_chars(f.data(), f.data() + f.size(), *out);
  if (ptr != f.data() + f.size()) return NumberParse::kNotANumber;
  if (ec == std::errc::result_out_of_range) return NumberParse::kOutOfRange;
  return ec == std::errc() ? NumberParse::kOk : NumberParse::kNotANumber;
}
bool ParseFloat(std::string_view f, float* out) { return ParseFloatDetailed(f, out) == NumberParse::kOk; }

std::string Quoted(std::string_view f) {
  constexpr size_t kMax = 40;
  if (f.size() <= kMax) return absl::StrCat("'", std::string(f), "'");
  return absl::StrCat("'", std::string(f.substr(0, kMax)), "...'");
}

absl::Status ImportCsv(const NamedBlob& file, const ExampleShape& shape, std::vector<Example>* out) {
  if (shape.text) {
    return absl::InvalidArgumentError(absl::StrCat(
        file.name, ": CSV data cannot train a text model; give text files (format text)"));
  }
  MYCEL_ASSIGN_OR_RETURN(std::string bytes, MaybeGunzip(file.bytes, file.name));
  if (bytes.empty()) return absl::InvalidArgumentError(absl::StrCat(file.name, ": file is empty"));
  std::string_view all(bytes);
  if (all.substr(0, 3) == "\xEF\xBB\xBF") all.remove_prefix(3);  // UTF-8 byte order mark
  const int64_t want_fields = shape.width + 1;
  std::vector<std::string_view> fields;
  fields.reserve(static_cast<size_t>(want_fields) + 1);
  size_t pos = 0;
  int64_t line_no = 0;
  size_t examples_before = out->size();
  int64_t blank_since = 0;  // first blank line of a run not yet followed by data
  while (pos < all.size()) {
    size_t nl = all.find('\n', pos);
    size_t end = nl == std::string_view::npos ? all.size() : nl;
    std::string_view line = Trim(all.substr(pos, end - pos));
    pos = end + 1;
    ++line_no;
    if (line.empty()) {
      if (blank_since == 0) blank_since = line_no;
      continue;
    }
    if (blank_since != 0) {
      return absl::InvalidArgumentError(absl::StrCat(file.name, ":", blank_since, ": empty line"));
    }
    fields.clear();
    size_t fpos = 0;
    while (true) {
      size_t comma = line.find(',', fpos);
      fields.push_back(Trim(line.substr(fpos, comma == std::string_view::npos ? std::string_view::npos
                                                                                 : comma - fpos)));
      if (comma == std::string_view::npos) break;
      fpos = comma + 1;
    }
    float first;
    if (line_no == 1 && !ParseFloat(fields[0], &first)) continue;  // header line
    if (static_cast<int64_t>(fields.size()) != want_fields) {
      return absl::InvalidArgumentError(absl::StrCat(file.name, ":", line_no, ": expected ", want_fields,
                                                     " fields (label + ", shape.width, " features), got ",
                                                     fields.size()));
    }
    Example e;
    e.dtype = DType::kF32;
    e.data.reserve(static_cast<size_t>(shape.width) * 4);
    for (size_t i = 0; i < fields.size(); ++i) {
      float v;
      NumberParse parsed = ParseFloatDetailed(fields[i], &v);
      if (parsed != NumberParse::kOk) {
        return absl::InvalidArgumentError(absl::StrCat(
            file.name, ":", line_no, ": field ", i + 1, " ", Quoted(fields[i]),
            parsed == NumberParse::kOutOfRange ? " is outside the float32 range" : " is not a number"));
      }
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(absl::StrCat(file.name, ":", line_no, ": field ", i + 1, " ",
                                                       Quoted(fields[i]), " is not a finite number"));
      }
      if (i == 0) {
        if (v < 0 || v != std::floor(v) || v >= static_cast<float>(shape.classes)) {
          return absl::InvalidArgumentError(absl::StrCat(
              file.name, ":", line_no, ": label ", Quoted(fields[i]),
              " is not a class index in [0, ", shape.classes, ")"));
        }
        e.label = static_cast<int64_t>(v);
      } else {
        PutFloat32(&e.data, v);
      }
    }
    out->push_back(std::move(e));
  }
  if (out->size() == examples_before) {
    return absl::InvalidArgumentError(absl::StrCat(file.name, ": no examples (only a header or blank lines)"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------- text

absl::Status ImportText(const NamedBlob& file, const ExampleShape& shape, std::vector<Example>* out) {
  if (!shape.text) {
    return absl::InvalidArgumentError(absl::StrCat(file.name, ": text data cannot train ",
                                                   ShapeDescription(shape),
                                                   "; text needs a char_lm model"));
  }
  if (shape.width < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("text window width must be >= 2 (context + 1), got ", shape.width));
  }
  MYCEL_ASSIGN_OR_RETURN(std::string bytes, MaybeGunzip(file.bytes, file.name));
  if (bytes.empty()) return absl::InvalidArgumentError(absl::StrCat(file.name, ": file is empty"));
  size_t bad = FirstInvalidUtf8(bytes);
  if (bad != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.name, ": invalid UTF-8 at byte offset ", bad));
  }
  const size_t w = static_cast<size_t>(shape.width);
  if (bytes.size() < w) {
    return absl::InvalidArgumentError(absl::StrCat(file.name, ": text is too short: ", bytes.size(),
                                                   " bytes, the model needs at least ", w,
                                                   " (context + 1)"));
  }
  // Window k covers [k(w-1), k(w-1)+w): consecutive windows share one byte, so
  // every byte after the first is a prediction target exactly once.
  const size_t stride = w - 1;
  out->reserve(out->size() + (bytes.size() - 1) / stride);
  for (size_t start = 0; start + w <= bytes.size(); start += stride) {
    Example e;
    e.label = -1;
    e.dtype = DType::kU8;
    e.data.assign(bytes, start, w);
    out->push_back(std::move(e));
  }
  return absl::OkStatus();
}

// Does `line` look like "number,number,..." (at least two fields)?
bool LooksNumericCsvLine(std::string_view line) {
  line = Trim(line);
  if (line.find(',') == std::string_view::npos) return false;
  size_t fpos = 0;
  while (true) {
    size_t comma = line.find(',', fpos);
    std::string_view f =
        Trim(line.substr(fpos, comma == std::string_view::npos ? std::string_view::npos : comma - fpos));
    float v;
    if (!ParseFloat(f, &v)) return false;
    if (comma == std::string_view::npos) return true;
    fpos = comma + 1;
  }
}

}  // namespace

absl::StatusOr<Format> ParseFormat(const std::string& name) {
  std::string n = absl::AsciiStrToLower(name);
  if (n.empty() || n == "auto") return Format::kAuto;
  if (n == "idx") return Format::kIdx;
  if (n == "csv") return Format::kCsv;
  if (n == "text" || n == "txt") return Format::kText;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown format '", name, "' (expected idx, csv, text, or empty for auto)"));
}

Format GuessFormat(const NamedBlob& file) {
  // The name wins when it is explicit, so "data.csv.gz" is CSV, not IDX.
  std::string base = BaseName(file.name);
  if (EndsWith(base, ".csv")) return Format::kCsv;
  if (EndsWith(base, ".txt") || EndsWith(base, ".md")) return Format::kText;
  if (HasGzipMagic(file.bytes) || HasIdxMagic(file.bytes)) return Format::kIdx;
  // Sniff the first 64 KiB: binary → idx (whose importer explains what is wrong),
  // numeric comma-separated lines → csv, other UTF-8 → text.
  std::string_view head = std::string_view(file.bytes).substr(0, 64 << 10);
  if (head.empty()) return Format::kText;
  if (FirstInvalidUtf8(head, /*allow_truncated_tail=*/head.size() < file.bytes.size()) !=
      std::string_view::npos) {
    return Format::kIdx;
  }
  // First two non-empty lines: the first may be a header.
  std::vector<std::string_view> lines;
  size_t pos = 0;
  while (pos < head.size() && lines.size() < 2) {
    size_t nl = head.find('\n', pos);
    size_t end = nl == std::string_view::npos ? head.size() : nl;
    std::string_view line = Trim(head.substr(pos, end - pos));
    if (!line.empty()) lines.push_back(line);
    if (nl == std::string_view::npos) break;
    pos = nl + 1;
  }
  for (std::string_view line : lines) {
    if (LooksNumericCsvLine(line)) return Format::kCsv;
  }
  return Format::kText;
}

absl::StatusOr<std::string> MaybeGunzip(const std::string& bytes, const std::string& name) {
  return internal::GunzipLimited(bytes, name, kMaxDecompressedBytes);
}

namespace internal {

absl::StatusOr<std::string> GunzipLimited(const std::string& bytes, const std::string& name,
                                          uint64_t max_bytes) {
  if (!HasGzipMagic(bytes)) return bytes;
  z_stream zs;
  std::memset(&zs, 0, sizeof zs);
  // 16 + MAX_WBITS: gzip wrapper only (zlib.h, inflateInit2).
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
    return absl::InternalError(absl::StrCat(name, ": cannot initialise zlib"));
  }
  struct InflateEnd {
    z_stream* zs;
    ~InflateEnd() { inflateEnd(zs); }
  } end_guard{&zs};

  // One byte beyond the cap lets zlib finish a stream of exactly max_bytes.
  const uint64_t buffer_cap = max_bytes + 1;
  std::string out;
  // Guess the size: MNIST-style data compresses ~4:1.
  out.resize(static_cast<size_t>(std::min<uint64_t>(buffer_cap, std::max<uint64_t>(bytes.size() * 4, 1 << 16))));
  uint64_t produced = 0;
  size_t consumed = 0;  // input bytes handed to zlib so far
  const auto* in = reinterpret_cast<const Bytef*>(bytes.data());
  while (true) {
    if (produced > max_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": decompresses to more than ", max_bytes,
                                                     " bytes; refusing"));
    }
    if (produced == out.size()) {
      out.resize(static_cast<size_t>(std::min<uint64_t>(buffer_cap, uint64_t{out.size()} * 2)));
    }
    // zlib's avail_in/out are 32-bit: feed at most 1 GiB at a time.
    size_t in_chunk = std::min<size_t>(bytes.size() - consumed, size_t{1} << 30);
    zs.next_in = const_cast<Bytef*>(in + consumed);
    zs.avail_in = static_cast<uInt>(in_chunk);
    size_t out_chunk = std::min<size_t>(out.size() - produced, size_t{1} << 30);
    zs.next_out = reinterpret_cast<Bytef*>(&out[produced]);
    zs.avail_out = static_cast<uInt>(out_chunk);
    int rc = inflate(&zs, Z_NO_FLUSH);
    consumed += in_chunk - zs.avail_in;
    produced += out_chunk - zs.avail_out;
    if (rc == Z_STREAM_END) {
      if (produced > max_bytes) continue;  // reported at the top of the loop
      if (consumed == bytes.size()) break;
      // Concatenated gzip members (gzip(1) accepts them; RFC 1952 §2.2).
      if (!HasGzipMagic(std::string_view(bytes).substr(consumed))) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": ", bytes.size() - consumed,
                                                       " bytes of trailing garbage after the gzip data at "
                                                       "compressed byte offset ", consumed));
      }
      inflateReset(&zs);
      continue;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR) {
      if (zs.avail_out == 0) continue;  // needs more room; loop grows `out`
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": truncated gzip data (the stream ends after ", bytes.size(), " compressed bytes)"));
    }
    if (rc == Z_MEM_ERROR) return absl::ResourceExhaustedError(absl::StrCat(name, ": out of memory in zlib"));
    return absl::InvalidArgumentError(absl::StrCat(name, ": corrupt gzip data near compressed byte offset ",
                                                   consumed, ": ", zs.msg != nullptr ? zs.msg : "inflate failed"));
  }
  out.resize(static_cast<size_t>(produced));
  return out;
}

}  // namespace internal

absl::StatusOr<std::vector<Example>> ImportFiles(const std::vector<NamedBlob>& files, Format format,
                                                 const ExampleShape& shape, bool unlabelled) {
  if (files.empty()) return absl::InvalidArgumentError("no files to import");
  if (shape.width < 1) return absl::InvalidArgumentError(absl::StrCat("example width must be >= 1, got ", shape.width));
  if (!shape.text && shape.classes < 1) {
    return absl::InvalidArgumentError(absl::StrCat("number of classes must be >= 1, got ", shape.classes));
  }
  std::vector<Example> out;
  std::vector<const NamedBlob*> idx_files;
  for (const NamedBlob& f : files) {
    if (f.bytes.empty()) return absl::InvalidArgumentError(absl::StrCat(f.name, ": file is empty"));
    Format fmt = format == Format::kAuto ? GuessFormat(f) : format;
    switch (fmt) {
      case Format::kIdx: idx_files.push_back(&f); break;
      case Format::kCsv: MYCEL_RETURN_IF_ERROR(ImportCsv(f, shape, &out)); break;
      case Format::kText: MYCEL_RETURN_IF_ERROR(ImportText(f, shape, &out)); break;
      case Format::kAuto: break;  // GuessFormat never returns kAuto
    }
  }
  if (!idx_files.empty()) MYCEL_RETURN_IF_ERROR(ImportIdx(idx_files, shape, unlabelled, &out));
  return out;
}

}  // namespace mycel::data
