#include "train/checkpointer.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "common/coding.h"
#include "common/logging.h"
#include "common/status.h"

namespace mycel::train {
namespace {
constexpr char kMagic[] = "MYCELCK1";
constexpr char kPrefix[] = "ckpt-";
constexpr char kSuffix[] = ".bin";
constexpr char kGoodName[] = "good.bin";

// Sequences we could ever write: one checkpoint a second for 30 million years.
// A name past it (ckpt-99999999999999999999999.bin, or 2^64 − 1, after which
// the next sequence would wrap to 0 and every new checkpoint would be deleted
// as the oldest) is not one of ours and is left alone.
constexpr uint64_t kMaxSeq = 999'999'999'999'999;

bool ParseSeq(const std::string& name, uint64_t* seq) {
  const size_t plen = sizeof(kPrefix) - 1, slen = sizeof(kSuffix) - 1;
  if (name.size() <= plen + slen || name.compare(0, plen, kPrefix) != 0 ||
      name.compare(name.size() - slen, slen, kSuffix) != 0) {
    return false;
  }
  std::string digits = name.substr(plen, name.size() - plen - slen);
  if (digits.empty() || digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  uint64_t v = 0;
  for (char c : digits) v = v * 10 + static_cast<uint64_t>(c - '0');  // ≤ 18 digits: no overflow
  if (v > kMaxSeq) return false;
  *seq = v;
  return true;
}
}  // namespace

absl::StatusOr<std::unique_ptr<Checkpointer>> Checkpointer::Open(const CheckpointerOptions& options) {
  if (options.keep < 1) return absl::InvalidArgumentError("checkpointer: keep must be >= 1");
  std::unique_ptr<Checkpointer> c(new Checkpointer(options));
  MYCEL_RETURN_IF_ERROR(options.env->CreateDirs(options.dir, 0700));
  MYCEL_ASSIGN_OR_RETURN(auto names, options.env->ListDir(options.dir));
  for (const auto& name : names) {
    // Temp files are "<final>.tmp-N": a crash between write and rename left them.
    if (name.find(".tmp-") != std::string::npos) {
      Logger("train")->info("removing stale temp file {}/{}", options.dir, name);
      (void)options.env->RemoveFile(options.dir + "/" + name);
    }
  }
  MYCEL_ASSIGN_OR_RETURN(auto seqs, c->ListSeqs());
  if (!seqs.empty()) c->last_seq_ = seqs.back();
  return c;
}

std::string Checkpointer::PathOf(uint64_t seq) const {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s%012" PRIu64 "%s", kPrefix, seq, kSuffix);
  return options_.dir + "/" + buf;
}

absl::StatusOr<std::vector<uint64_t>> Checkpointer::ListSeqs() {
  MYCEL_ASSIGN_OR_RETURN(auto names, options_.env->ListDir(options_.dir));
  std::vector<uint64_t> seqs;
  for (const auto& name : names) {
    uint64_t seq;
    if (ParseSeq(name, &seq)) {
      seqs.push_back(seq);
    } else if (name.rfind(kPrefix, 0) == 0 && name.find(".tmp-") == std::string::npos) {
      Logger("train")->warn("ignoring {}/{}: not a checkpoint name this daemon writes", options_.dir, name);
    }
  }
  std::sort(seqs.begin(), seqs.end());
  return seqs;
}

absl::Status Checkpointer::Save(std::string_view payload) {
  uint64_t seq = last_seq_ + 1;
  std::string path = PathOf(seq);
  MYCEL_RETURN_IF_ERROR(
      Annotate(options_.env->WriteFileAtomically(path, FrameChecksummed(kMagic, payload)),
               "writing checkpoint"));
  last_seq_ = seq;
  MYCEL_ASSIGN_OR_RETURN(auto seqs, ListSeqs());
  for (size_t i = 0; i + options_.keep < seqs.size(); ++i) {
    (void)options_.env->RemoveFile(PathOf(seqs[i]));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Checkpointer::Loaded>> Checkpointer::LoadNewest() {
  MYCEL_ASSIGN_OR_RETURN(auto seqs, ListSeqs());
  for (auto it = seqs.rbegin(); it != seqs.rend(); ++it) {
    std::string path = PathOf(*it);
    auto bytes = options_.env->ReadFile(path);
    if (!bytes.ok()) {
      Logger("train")->warn("skipping checkpoint {}: {}", path, bytes.status().message());
      continue;
    }
    auto payload = UnframeChecksummed(kMagic, *bytes, path);
    if (!payload.ok()) {
      Logger("train")->warn("skipping corrupt checkpoint: {}", payload.status().message());
      continue;
    }
    return std::optional<Loaded>(Loaded{*it, path, std::move(payload).value()});
  }
  return std::optional<Loaded>();
}

absl::Status Checkpointer::SaveGood(std::string_view payload) {
  return Annotate(options_.env->WriteFileAtomically(options_.dir + "/" + kGoodName, FrameChecksummed(kMagic, payload)),
                  "writing the good checkpoint");
}

absl::StatusOr<std::optional<Checkpointer::Loaded>> Checkpointer::LoadGood() {
  const std::string path = options_.dir + "/" + kGoodName;
  auto bytes = options_.env->ReadFile(path);
  if (absl::IsNotFound(bytes.status())) return std::optional<Loaded>();
  if (!bytes.ok()) return bytes.status();
  MYCEL_ASSIGN_OR_RETURN(auto payload, UnframeChecksummed(kMagic, *bytes, path));
  return std::optional<Loaded>(Loaded{0, path, std::move(payload)});
}

void Sections::Put(const std::string& name, std::string bytes) {
  for (auto& item : items_) {
    if (item.first == name) { item.second = std::move(bytes); return; }
  }
  items_.emplace_back(name, std::move(bytes));
}

const std::string* Sections::Get(const std::string& name) const {
  for (const auto& item : items_) {
    if (item.first == name) return &item.second;
  }
  return nullptr;
}

std::string Sections::Encode() const {
  std::string out;
  PutFixed64(&out, items_.size());
  for (const auto& [name, bytes] : items_) {
    PutFixed64(&out, name.size());
    out += name;
    PutFixed64(&out, bytes.size());
    out += bytes;
  }
  return out;
}

absl::StatusOr<Sections> Sections::Decode(std::string_view in) {
  Sections s;
  uint64_t count;
  if (!GetFixed64(&in, &count)) return absl::DataLossError("sections: truncated header");
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t nlen, blen;
    if (!GetFixed64(&in, &nlen) || nlen > in.size()) return absl::DataLossError("sections: truncated name");
    std::string name(in.substr(0, nlen));
    in.remove_prefix(nlen);
    if (!GetFixed64(&in, &blen) || blen > in.size()) {
      return absl::DataLossError("sections: truncated section " + name);
    }
    s.items_.emplace_back(std::move(name), std::string(in.substr(0, blen)));
    in.remove_prefix(blen);
  }
  return s;
}

}  // namespace mycel::train
