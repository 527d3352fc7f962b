#include "peer/pull_header.h"

#include <map>
#include <utility>
#include <vector>

#include "common/refusal.h"

namespace mycel::peer {

PullHeader MakeHeader(const GossipOptions& options, size_t parameters, const federation::SharedPullAnswer& shared,
                      const PayloadPieces& payload) {
  const federation::PullAnswer& answer = shared.answer;
  PullHeader header;
  header.set_epoch(answer.epoch);
  header.set_from_seq(answer.from_seq);
  header.set_to_seq(answer.to_seq);
  header.set_keyframe(answer.keyframe);
  header.set_codec(answer.codec);
  header.set_fingerprint(options.fingerprint);
  header.set_layout(options.layout);
  header.set_samples_trained(answer.samples_trained);
  header.set_degree(answer.degree);
  header.set_count(static_cast<uint32_t>(shared.deltas.size()));
  header.set_payload_bytes(payload.size());
  header.set_parameters(parameters);
  return header;
}

absl::Status CheckHeader(const GossipOptions& options, size_t parameters, const PullHeader& header) {
  if (header.fingerprint() != options.fingerprint) {
    return Refuse(Refusal::kFingerprintMismatch, "their model " + header.fingerprint() + " is not ours" +
                                                     LayoutDifference(options.layout, header.layout()));
  }
  if (header.parameters() != parameters) {
    return Refuse(Refusal::kBadShape, std::to_string(header.parameters()) + " parameters, expected " +
                                          std::to_string(parameters));
  }
  return CheckPayloadBounds(header.keyframe(), header.count(), header.payload_bytes(), parameters,
                            static_cast<uint64_t>(options.max_answer_bytes));
}

federation::PullAnswerView AnswerView(const PullHeader& header) {
  federation::PullAnswerView answer;
  answer.epoch = header.epoch();
  answer.from_seq = header.from_seq();
  answer.to_seq = header.to_seq();
  answer.keyframe = header.keyframe();
  answer.codec = header.codec();
  answer.samples_trained = header.samples_trained();
  answer.degree = header.degree();
  return answer;
}

std::string LayoutDifference(const std::string& ours, const std::string& theirs_raw, bool to_them) {
  const std::string their = to_them ? "your" : "their", our = to_them ? "mine" : "ours";
  const std::string they = to_them ? "you" : "they", we = to_them ? "I" : "we";
  if (theirs_raw.empty()) return "";
  std::string theirs = theirs_raw;
  for (char& c : theirs) {
    if (c != '\n' && (c < 0x20 || c > 0x7e)) c = '?';
  }
  auto parse = [](const std::string& text) {
    std::vector<std::pair<std::string, std::string>> out;  // name → "dtype shape", in order
    size_t at = 0;
    while (at < text.size()) {
      size_t end = text.find('\n', at);
      if (end == std::string::npos) end = text.size();
      const std::string line = text.substr(at, end - at);
      at = end + 1;
      const size_t sp = line.find(' ');
      if (sp != std::string::npos) out.emplace_back(line.substr(0, sp), line.substr(sp + 1));
    }
    return out;
  };
  const auto a = parse(ours), b = parse(theirs);
  const std::map<std::string, std::string> am(a.begin(), a.end()), bm(b.begin(), b.end());
  std::string what;
  for (const auto& [name, v] : a) {
    auto it = bm.find(name);
    if (it == bm.end()) {
      if (name != "kind") what = ": " + they + " have no " + name + " (" + our + " " + v + ")";
    } else if (it->second != v) {
      what = name == "kind" ? ": " + their + " model is " + it->second + ", " + our + " " + v
                            : ": " + their + " " + name + " is " + it->second + ", " + our + " " + v;
    }
    if (!what.empty()) break;
  }
  for (size_t i = 0; what.empty() && i < b.size(); ++i) {
    if (am.count(b[i].first) == 0) {
      what = ": " + they + " have " + b[i].first + " (" + b[i].second + "), " + we + " do not";
    }
  }
  return what.substr(0, 200);
}

}  // namespace mycel::peer
