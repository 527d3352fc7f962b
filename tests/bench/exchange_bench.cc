// exchange_bench: cost of one peer exchange (what a Pull costs both ends,
// without the socket) against libsodium's XChaCha20-Poly1305 AEAD alone on the
// same bytes. Machines are shared and noisy, so the contenders run in
// interleaved rounds in one process (order rotated per round) and the result
// is the median of the per-round ratios.
//
// Contenders, each over the payload of a --params model (fp32, 4 bytes/param):
//   aead      crypto_aead_xchacha20poly1305_ietf_encrypt then _decrypt of the
//             payload in 1 MiB chunks into preallocated buffers (the exchange
//             both seals and opens, so the baseline does both).
//   delta     node A has published one delta (untimed Publish); node B pulls it
//             exactly as src/peer/gossip.cc does, minus gRPC, through the same
//             functions (src/peer/payload.h):
//               handshake  ClientSession::Begin, ServerSession::Accept,
//                          ServerSession::Reply, ClientSession::AcceptReply,
//                          CheckPayloadBounds, reserving the payload
//               answer     A.AnswerShared(B.Cursor(0)) (deltas shared with the log)
//               encode     PayloadPieces (length prefixes + views) + header
//               seal       SealPayload: SealTo per 1 MiB chunk } interleaved chunk by
//               open       OpenChunk: OpenAppend per chunk     } chunk, as streamed
//               assemble   DecodePayload (views into the payload)
//               apply      B.Apply(PullAnswerView) (decode, finite check, norm bound, add)
//               merge      B.Merge(x_B) (one mirror)
//               teardown   destroying the exchange's buffers (munmap)
//   keyframe  the same with B asking for (0, 0): A answers with all of x̂.
// Each stage also reports its minor page faults (fresh memory first touched),
// and a last line times reference pieces (copies, decode, norm) on the same
// payload, so the split can be read against them.
// Codecs: Codec::EncodeInto + Decode of one weight difference per codec
// (federation/codec.h) against memcpy of the same fp32 bytes, warm buffers on
// both sides, each codec timed right after its own memcpy (ratio = memcpy
// time / codec time, median over rounds), at the model's size and at 100k
// values (in cache). One line per codec and size:
//   "codec int8: encode+decode 0.62x memcpy (X GB/s vs memcpy Y GB/s), ..."
// and a "floor" line: one read of the n floats plus one write of n floats
// (memset), which any encode + decode does at least.
// The reply header stands in for the PullHeader proto (same fields, fixed
// layout); gRPC framing and its copies are not included.
//
//   build-xbench/bin/exchange_bench [--params 10000000] [--rounds 5] [--smoke]
// Last line: "exchange/aead ratio: 0.62 (exchange 9.1e7 params/s = 364 MB/s,
//             xchacha20poly1305 enc+dec 588 MB/s; keyframe 0.70)".
#include <sodium.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/identity.h"
#include "crypto/session.h"
#include "federation/codec.h"
#include "federation/federation.h"
#include "peer/payload.h"

using namespace mycel;

namespace {

using peer::kChunkBytes;  // as src/peer/gossip.cc

struct Args {
  size_t params = 10000000;
  int rounds = 5;
  bool smoke = false;
};

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr, "exchange_bench: %s\nusage: exchange_bench [--params N] [--rounds R] [--smoke]\n", why);
  std::exit(2);
}

Args ParseArgs(int argc, char** argv) {
  Args a;
  bool params_set = false, rounds_set = false;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage((s + " needs a value").c_str());
      return argv[++i];
    };
    if (s == "--params") {
      long long v = std::atoll(value().c_str());
      if (v < 1) Usage("--params must be >= 1");
      a.params = static_cast<size_t>(v);
      params_set = true;
    } else if (s == "--rounds") {
      a.rounds = std::atoi(value().c_str());
      if (a.rounds < 1) Usage("--rounds must be >= 1");
      rounds_set = true;
    } else if (s == "--smoke") {
      a.smoke = true;
    } else {
      Usage(("unknown flag " + s).c_str());
    }
  }
  if (a.smoke) {
    if (!params_set) a.params = 600000;  // 2.4 MB: three chunks
    if (!rounds_set) a.rounds = 1;
  }
  return a;
}

std::string LoadAvg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  if (!(f >> a >> b >> c)) return "unknown";
  return a + " " + b + " " + c;
}

using SteadyClock = std::chrono::steady_clock;
double Since(SteadyClock::time_point t0) {
  return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "exchange_bench: %s\n", what.c_str());
  std::exit(1);
}

// ------------------------------------------------------------ baseline --

// XChaCha20-Poly1305 (IETF AEAD) encrypt + decrypt of `bytes` in 1 MiB chunks,
// preallocated and pre-touched buffers, the same 32 bytes of associated data
// the session binds to every chunk.
class Aead {
 public:
  explicit Aead(size_t bytes) : bytes_(bytes) {
    size_t chunks = (bytes + kChunkBytes - 1) / kChunkBytes;
    plain_.resize(bytes);
    for (size_t i = 0; i < bytes; ++i) plain_[i] = static_cast<unsigned char>(i * 131 + 7);
    sealed_.assign(bytes + chunks * crypto_aead_xchacha20poly1305_ietf_ABYTES, 0);
    opened_.assign(bytes, 0);
    crypto_aead_xchacha20poly1305_ietf_keygen(key_);
    randombytes_buf(ad_, sizeof(ad_));
    nonces_.resize(chunks * crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    randombytes_buf(nonces_.data(), nonces_.size());
  }

  // Returns {encrypt seconds, decrypt seconds}.
  std::pair<double, double> Run() {
    const size_t abytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;
    auto t0 = SteadyClock::now();
    size_t chunk = 0;
    for (size_t off = 0; off < bytes_; off += kChunkBytes, ++chunk) {
      size_t n = std::min(kChunkBytes, bytes_ - off);
      unsigned long long clen = 0;
      crypto_aead_xchacha20poly1305_ietf_encrypt(sealed_.data() + off + chunk * abytes, &clen,
                                                 plain_.data() + off, n, ad_, sizeof(ad_), nullptr,
                                                 Nonce(chunk), key_);
    }
    double enc = Since(t0);
    t0 = SteadyClock::now();
    chunk = 0;
    for (size_t off = 0; off < bytes_; off += kChunkBytes, ++chunk) {
      size_t n = std::min(kChunkBytes, bytes_ - off);
      unsigned long long mlen = 0;
      if (crypto_aead_xchacha20poly1305_ietf_decrypt(opened_.data() + off, &mlen, nullptr,
                                                     sealed_.data() + off + chunk * abytes,
                                                     n + abytes, ad_, sizeof(ad_), Nonce(chunk),
                                                     key_) != 0) {
        Die("baseline: decrypt failed");
      }
    }
    double dec = Since(t0);
    return {enc, dec};
  }

  bool RoundTrips() const { return std::memcmp(plain_.data(), opened_.data(), bytes_) == 0; }

 private:
  const unsigned char* Nonce(size_t chunk) const {
    return nonces_.data() + chunk * crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
  }
  size_t bytes_;
  std::vector<unsigned char> plain_, sealed_, opened_, nonces_;
  unsigned char key_[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
  unsigned char ad_[32];
};

// ------------------------------------------------------------ exchange --

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
bool GetU64(std::string_view* in, uint64_t* v) {
  if (in->size() < 8) return false;
  *v = 0;
  for (int i = 0; i < 8; ++i) *v |= static_cast<uint64_t>(static_cast<unsigned char>((*in)[i])) << (8 * i);
  in->remove_prefix(8);
  return true;
}

// Stand-in for the PullHeader proto: the same fields, fixed little-endian layout.
struct Header {
  uint64_t epoch = 0, from_seq = 0, to_seq = 0, payload_bytes = 0, parameters = 0;
  int64_t samples_trained = 0;
  uint32_t count = 0;
  int32_t degree = 0;
  bool keyframe = false;
  std::string codec, fingerprint;
};

std::string SerializeHeader(const Header& h) {
  std::string out;
  PutU64(&out, h.epoch);
  PutU64(&out, h.from_seq);
  PutU64(&out, h.to_seq);
  PutU64(&out, h.payload_bytes);
  PutU64(&out, h.parameters);
  PutU64(&out, static_cast<uint64_t>(h.samples_trained));
  PutU64(&out, h.count);
  PutU64(&out, static_cast<uint64_t>(static_cast<int64_t>(h.degree)));
  PutU64(&out, h.keyframe ? 1 : 0);
  PutU64(&out, h.codec.size());
  out += h.codec;
  PutU64(&out, h.fingerprint.size());
  out += h.fingerprint;
  return out;
}

bool ParseHeader(std::string_view in, Header* h) {
  uint64_t v[10];
  for (auto& x : v) {
    if (!GetU64(&in, &x)) return false;
  }
  h->epoch = v[0];
  h->from_seq = v[1];
  h->to_seq = v[2];
  h->payload_bytes = v[3];
  h->parameters = v[4];
  h->samples_trained = static_cast<int64_t>(v[5]);
  h->count = static_cast<uint32_t>(v[6]);
  h->degree = static_cast<int32_t>(static_cast<int64_t>(v[7]));
  h->keyframe = v[8] != 0;
  if (v[9] > in.size()) return false;
  h->codec = std::string(in.substr(0, v[9]));
  in.remove_prefix(v[9]);
  uint64_t flen;
  if (!GetU64(&in, &flen) || flen != in.size()) return false;
  h->fingerprint = std::string(in);
  return true;
}

enum Stage { kHandshake, kAnswer, kEncode, kSeal, kOpen, kAssemble, kApply, kMerge, kTeardown, kStages };
const char* const kStageNames[kStages] = {"handshake", "answer", "encode", "seal", "open",
                                          "assemble", "apply", "merge", "teardown"};

long MinorFaults() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

struct ExchangeTimes {
  double stage[kStages] = {};
  long faults[kStages] = {};  // minor page faults (fresh memory touched)
  double total = 0;
};

const char kFingerprint[] = "bench:0123456789abcdef";

class Nodes {
 public:
  explicit Nodes(size_t params) : params_(params), rx_(peer::ReceiveBufferKeepBytes(params)) {
    auto a = crypto::Identity::Generate();
    auto b = crypto::Identity::Generate();
    if (!a.ok() || !b.ok()) Die("identity generation failed");
    id_a_ = std::move(*a);
    id_b_ = std::move(*b);
    pinned_a_ = {id_b_->public_key()};

    std::mt19937_64 rng(42);
    std::normal_distribution<float> w(0.0f, 0.05f), d(0.0f, 1e-3f);
    std::vector<float> initial(params);
    for (auto& v : initial) v = w(rng);
    perturb_.resize(params);
    for (auto& v : perturb_) v = d(rng);

    federation::FederationOptions o = federation::PlainGossip();
    o.codec = "dense_f32";
    o.max_delta_norm = 1e12;
    o.max_keyframe_norm = 1e12;
    o.max_log_bytes = 64 << 20;
    auto fa = federation::Federation::Create(o, initial, /*num_peers=*/1, /*degree=*/1);
    auto fb = federation::Federation::Create(o, initial, /*num_peers=*/1, /*degree=*/1);
    if (!fa.ok() || !fb.ok()) Die("Federation::Create failed");
    fed_a_ = std::move(*fa);
    fed_b_ = std::move(*fb);
    x_a_ = initial;
    x_b_ = std::move(initial);
  }

  // A's trainer moved: one Publish of a changed x (untimed).
  void PublishOnA() {
    const float sign = (flip_ = !flip_) ? 1.0f : -0.5f;
    for (size_t k = 0; k < params_; ++k) x_a_[k] += sign * perturb_[k];
    fed_a_->Publish(x_a_.data(), ++samples_a_);
  }

  // One Pull by B from A, every piece the daemon runs, timed per stage.
  ExchangeTimes Exchange(bool keyframe) {
    ExchangeTimes t;
    const auto start = SteadyClock::now();
    auto t0 = start;
    long f0 = MinorFaults();
    auto lap = [&](Stage s) {
      auto now = SteadyClock::now();
      long f = MinorFaults();
      t.stage[s] += std::chrono::duration<double>(now - t0).count();
      t.faults[s] += f - f0;
      t0 = now;
      f0 = f;
    };
    const int64_t now_s = static_cast<int64_t>(std::time(nullptr));
    {
      // ---- client B: Hello
      auto [epoch, after] = keyframe ? std::pair<uint64_t, uint64_t>{0, 0} : fed_b_->Cursor(0);
      std::string request;
      PutU64(&request, epoch);
      PutU64(&request, after);
      request += kFingerprint;
      request += "node-b";
      auto cs = crypto::ClientSession::Begin(*id_b_, id_a_->public_key(), request, now_s);
      if (!cs.ok()) Die("ClientSession::Begin: " + std::string(cs.status().message()));
      // ---- server A
      auto ss = crypto::ServerSession::Accept(*id_a_, pinned_a_, replay_a_, (*cs)->hello(), now_s);
      if (!ss.ok()) Die("ServerSession::Accept: " + std::string(ss.status().message()));
      std::string_view req = (*ss)->hello().request;
      uint64_t req_epoch = 0, req_after = 0;
      if (!GetU64(&req, &req_epoch) || !GetU64(&req, &req_after)) Die("request does not parse");
      lap(kHandshake);

      federation::SharedPullAnswer shared = fed_a_->AnswerShared(req_epoch, req_after);
      const federation::PullAnswer& answer = shared.answer;
      lap(kAnswer);

      peer::PayloadPieces payload(shared);
      Header h;
      h.epoch = answer.epoch;
      h.from_seq = answer.from_seq;
      h.to_seq = answer.to_seq;
      h.keyframe = answer.keyframe;
      h.codec = answer.codec;
      h.fingerprint = kFingerprint;
      h.samples_trained = answer.samples_trained;
      h.degree = answer.degree;
      h.count = static_cast<uint32_t>(shared.deltas.size());
      h.payload_bytes = payload.size();
      h.parameters = fed_a_->size();
      std::string header_bytes = SerializeHeader(h);
      lap(kEncode);

      auto reply = (*ss)->Reply(header_bytes);
      if (!reply.ok()) Die("Reply: " + std::string(reply.status().message()));
      lap(kHandshake);

      // ---- client B: reply header
      auto got_header = (*cs)->AcceptReply(*reply);
      if (!got_header.ok()) Die("AcceptReply: " + std::string(got_header.status().message()));
      Header hb;
      if (!ParseHeader(*got_header, &hb)) Die("header does not parse");
      if (hb.fingerprint != kFingerprint || hb.parameters != fed_b_->size()) Die("header mismatch");
      if (!peer::CheckPayloadBounds(hb.keyframe, hb.count, hb.payload_bytes, fed_b_->size(),
                                    uint64_t{1} << 31)
               .ok()) {
        Die("bad_shape");
      }
      peer::ReceiveBuffer::Use rx_use(rx_, hb.payload_bytes);
      std::string& received = rx_use.payload();
      lap(kHandshake);

      // ---- the stream, as on the wire: A seals a chunk into its outgoing
      // message (gRPC Write), B opens it onto the end of its payload.
      bool final = false;
      std::string sealed;  // stands in for the reused PullChunk's sealed field
      const peer::OpenFn open = peer::OpenDown(**cs);
      const bool delivered = peer::SealPayload(payload, peer::SealDown(**ss), &sealed, [&] {
        lap(kSeal);
        absl::Status opened = peer::OpenChunk(open, sealed, hb.payload_bytes, &received, &final);
        if (!opened.ok()) Die("Open: " + std::string(opened.message()));
        lap(kOpen);
        return true;
      });
      if (!delivered || !final) Die("stream ended early");
      if (!(*cs)->Finish().ok() || received.size() != hb.payload_bytes) Die("truncated");

      federation::PullAnswerView got;
      got.epoch = hb.epoch;
      got.from_seq = hb.from_seq;
      got.to_seq = hb.to_seq;
      got.keyframe = hb.keyframe;
      got.codec = hb.codec;
      got.samples_trained = hb.samples_trained;
      got.degree = hb.degree;
      absl::Status decoded = peer::DecodePayload(received, hb.keyframe, hb.count, &got);
      if (!decoded.ok()) Die("DecodePayload: " + std::string(decoded.message()));
      lap(kAssemble);

      absl::Status applied = fed_b_->Apply(0, got);
      if (!applied.ok()) Die("Apply: " + std::string(applied.message()));
      lap(kApply);

      if (fed_b_->Merge(x_b_.data()) != 1) Die("Merge: no mirror took part");
      lap(kMerge);
    }  // every buffer of the exchange is freed here
    lap(kTeardown);
    t.total = Since(start);
    return t;
  }

  // B's mirror of A must equal A's public copy bit for bit.
  bool MirrorMatches() const {
    std::vector<float> m = fed_b_->mirror(0), xh = fed_a_->public_copy();
    return m.size() == xh.size() && std::memcmp(m.data(), xh.data(), 4 * m.size()) == 0;
  }
  bool WeightsFinite() const {
    for (float v : x_b_) {
      if (!std::isfinite(v)) return false;
    }
    return true;
  }
  federation::MirrorStats Stats() const { return fed_b_->mirror_stats(0); }

 private:
  size_t params_;
  peer::ReceiveBuffer rx_;  // B's, kept between pulls as in gossip.cc
  std::unique_ptr<crypto::Identity> id_a_, id_b_;
  std::vector<std::string> pinned_a_;
  crypto::ReplayGuard replay_a_;
  std::unique_ptr<federation::Federation> fed_a_, fed_b_;
  std::vector<float> x_a_, x_b_, perturb_;
  int64_t samples_a_ = 0;
  bool flip_ = false;
};

// Reference pieces on the same payload, to explain the split: what a copy
// costs into warm memory and into a fresh allocation (page faults), and what
// the parts of Apply cost on their own. Medians of `reps` runs, in seconds.
struct Pieces {
  double copy_warm, copy_fresh, decode, finite, l2norm, accumulate;
};

volatile double g_sink = 0;

Pieces MeasurePieces(size_t params, int reps) {
  const size_t bytes = params * sizeof(float);
  auto codec = federation::MakeCodec("dense_f32");
  if (!codec.ok()) Die("MakeCodec failed");
  std::vector<float> src(params), dst(params), acc(params, 0.0f);
  for (size_t i = 0; i < params; ++i) src[i] = static_cast<float>(i % 1000) * 1e-3f;
  std::string encoded = (*codec)->Encode(src.data(), params);
  std::vector<double> cw, cf, de, fi, l2, ac;
  for (int r = 0; r < reps; ++r) {
    auto t0 = SteadyClock::now();
    std::memcpy(dst.data(), src.data(), bytes);
    cw.push_back(Since(t0));
    t0 = SteadyClock::now();
    {
      std::string fresh(reinterpret_cast<const char*>(src.data()), bytes);
      g_sink = g_sink + fresh[bytes / 2];
    }
    cf.push_back(Since(t0));
    t0 = SteadyClock::now();
    if (!(*codec)->Decode(encoded, params, dst.data()).ok()) Die("decode failed");
    de.push_back(Since(t0));
    t0 = SteadyClock::now();
    bool ok = true;  // naive check: std::isfinite per value, early exit
    for (size_t i = 0; i < params; ++i) {
      if (!std::isfinite(dst[i])) { ok = false; break; }
    }
    g_sink = g_sink + ok;
    fi.push_back(Since(t0));
    t0 = SteadyClock::now();
    double sum = 0;  // naive norm: one serial double accumulator
    for (size_t i = 0; i < params; ++i) sum += static_cast<double>(dst[i]) * dst[i];
    g_sink = g_sink + std::sqrt(sum);
    l2.push_back(Since(t0));
    t0 = SteadyClock::now();
    float* a = acc.data();
    const float* d = dst.data();
    for (size_t k = 0; k < params; ++k) a[k] += d[k];
    g_sink = g_sink + acc[params / 3];
    ac.push_back(Since(t0));
  }
  return {Median(cw), Median(cf), Median(de), Median(fi), Median(l2), Median(ac)};
}

// ------------------------------------------------------------- codecs --

const char* const kBenchCodecs[] = {"dense_f32", "fp16", "int8", "sign", "topk:0.01", "topk:0.01+int8"};
constexpr size_t kFloor = sizeof(kBenchCodecs) / sizeof(kBenchCodecs[0]);  // the floor's slot

struct CodecTimes {
  std::string name;
  double ratio = 0;      // median of memcpy time / (encode + decode time)
  double codec_s = 0;    // median encode + decode, seconds per pass
  double encode_s = 0, decode_s = 0;
  double memcpy_s = 0;   // median memcpy of the n fp32 values
  size_t payload = 0;    // encoded bytes
};

// A weight difference: N(0, 1e-3) with a scale that changes every 64k values
// (10^U(-1, 1)), as layers differ. Selection and quantisation see realistic
// magnitudes; the timings hardly depend on them.
std::vector<float> CodecInput(size_t n) {
  std::mt19937_64 rng(7);
  std::normal_distribution<float> g(0.0f, 1e-3f);
  std::uniform_real_distribution<float> e(-1.0f, 1.0f);
  std::vector<float> v(n);
  float scale = 1;
  for (size_t i = 0; i < n; ++i) {
    if (i % 65536 == 0) scale = std::pow(10.0f, e(rng));
    v[i] = g(rng) * scale;
  }
  return v;
}

// `rounds` rounds; in each, every codec (order rotated) is timed right after a
// memcpy of the same bytes, so both see the same machine load. Small n repeats
// each operation so a timing covers at least ~4M values.
std::vector<CodecTimes> MeasureCodecs(size_t n, int rounds) {
  const int iters = static_cast<int>(std::max<size_t>(1, 4000000 / n));
  const std::vector<float> src = CodecInput(n);
  std::vector<float> copy(n), out(n);
  const size_t count = kFloor + 1;
  std::vector<std::unique_ptr<federation::Codec>> codecs;
  std::vector<std::string> payloads(count);
  for (size_t c = 0; c < kFloor; ++c) {
    auto made = federation::MakeCodec(kBenchCodecs[c]);
    if (!made.ok()) Die("MakeCodec(" + std::string(kBenchCodecs[c]) + ") failed");
    codecs.push_back(std::move(*made));
    // Warm-up (untimed): touches the payload and output buffers.
    codecs[c]->EncodeInto(src.data(), n, &payloads[c]);
    absl::Status st = codecs[c]->Decode(payloads[c], n, out.data());
    if (!st.ok()) Die(std::string(kBenchCodecs[c]) + " does not decode: " + std::string(st.message()));
  }
  std::memcpy(copy.data(), src.data(), n * sizeof(float));
  std::vector<std::vector<double>> ratio(count), total(count), enc(count), dec(count), mem(count);
  for (int r = 0; r < rounds; ++r) {
    for (size_t j = 0; j < count; ++j) {
      const size_t c = (j + static_cast<size_t>(r)) % count;
      auto t0 = SteadyClock::now();
      for (int it = 0; it < iters; ++it) std::memcpy(copy.data(), src.data(), n * sizeof(float));
      g_sink = g_sink + copy[n / 2];
      const double m = Since(t0) / iters;
      t0 = SteadyClock::now();
      double e = 0, d = 0;
      for (int it = 0; it < iters; ++it) {
        if (c == kFloor) {
          // Read every value: an OR of their bits, 16 bytes at a time (GCC
          // vector extensions: this target is not built with -ftree-vectorize).
          typedef uint32_t U32x4 __attribute__((vector_size(16)));
          U32x4 acc[4] = {};
          size_t i = 0;
          for (; i + 16 <= n; i += 16) {
            for (int j = 0; j < 4; ++j) {
              U32x4 x;
              std::memcpy(&x, &src[i + 4 * j], sizeof x);
              acc[j] |= x;
            }
          }
          uint32_t any = 0;
          for (; i < n; ++i) any |= static_cast<uint32_t>(src[i] != 0);
          for (const U32x4& a : acc) any |= a[0] | a[1] | a[2] | a[3];
          g_sink = g_sink + any;
          const auto t1 = SteadyClock::now();
          std::memset(out.data(), 0, n * sizeof(float));
          const auto t2 = SteadyClock::now();
          e += std::chrono::duration<double>(t1 - t0).count();
          d += std::chrono::duration<double>(t2 - t1).count();
          t0 = t2;
          continue;
        }
        codecs[c]->EncodeInto(src.data(), n, &payloads[c]);
        const auto t1 = SteadyClock::now();
        if (!codecs[c]->Decode(payloads[c], n, out.data()).ok()) Die("decode failed");
        const auto t2 = SteadyClock::now();
        e += std::chrono::duration<double>(t1 - t0).count();
        d += std::chrono::duration<double>(t2 - t1).count();
        t0 = t2;
      }
      g_sink = g_sink + out[n / 3];
      e /= iters;
      d /= iters;
      ratio[c].push_back(m / (e + d));
      total[c].push_back(e + d);
      enc[c].push_back(e);
      dec[c].push_back(d);
      mem[c].push_back(m);
    }
  }
  std::vector<CodecTimes> result(count);
  for (size_t c = 0; c < count; ++c) {
    result[c] = {c == kFloor ? "floor" : kBenchCodecs[c], Median(ratio[c]), Median(total[c]), Median(enc[c]),
                 Median(dec[c]), Median(mem[c]), payloads[c].size()};
  }
  return result;
}

std::string Rate(double bytes_per_s) {
  char buf[32];
  if (bytes_per_s >= 1e9) std::snprintf(buf, sizeof buf, "%.2f GB/s", bytes_per_s / 1e9);
  else std::snprintf(buf, sizeof buf, "%.0f MB/s", bytes_per_s / 1e6);
  return buf;
}

void PrintSplit(const char* name, const std::vector<ExchangeTimes>& runs, double aead_s) {
  double total = 0;
  std::vector<double> v;
  for (const auto& r : runs) v.push_back(r.total);
  total = Median(v);
  std::printf("%s split (median ms per stage, %% of median total %.1f ms; aead enc+dec %.1f ms):\n", name,
              total * 1e3, aead_s * 1e3);
  for (int s = 0; s < kStages; ++s) {
    v.clear();
    for (const auto& r : runs) v.push_back(r.stage[s]);
    double m = Median(v);
    v.clear();
    for (const auto& r : runs) v.push_back(static_cast<double>(r.faults[s]));
    std::printf("  %-10s %8.2f ms  %5.1f%%  %7.0f page faults\n", kStageNames[s], m * 1e3,
                total > 0 ? 100 * m / total : 0.0, Median(v));
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args args = ParseArgs(argc, argv);
  if (sodium_init() < 0) Die("sodium_init failed");
  const size_t bytes = args.params * sizeof(float);
  std::printf("exchange_bench: %zu parameters (%.1f MB payload), %d round(s), 1 MiB chunks\n", args.params,
              bytes / 1e6, args.rounds);
  std::printf("load average at start: %s\n", LoadAvg().c_str());
  std::fflush(stdout);

  Aead aead(bytes);
  Nodes nodes(args.params);

  // Warm-up (untimed): first keyframe initializes B's mirror, then one delta.
  aead.Run();
  if (!aead.RoundTrips()) Die("baseline: decrypt does not round-trip");
  nodes.Exchange(/*keyframe=*/true);
  nodes.PublishOnA();
  nodes.Exchange(/*keyframe=*/false);

  std::vector<double> aead_s, aead_enc_s, delta_s, key_s, delta_ratio, key_ratio;
  std::vector<ExchangeTimes> delta_runs, key_runs;
  for (int r = 0; r < args.rounds; ++r) {
    double a = 0, d = 0, k = 0;
    // Rotate the order so no contender always runs first (cache, frequency).
    for (int i = 0; i < 3; ++i) {
      switch ((r + i) % 3) {
        case 0: {
          auto [enc, dec] = aead.Run();
          a = enc + dec;
          aead_s.push_back(a);
          aead_enc_s.push_back(enc);
          break;
        }
        case 1: {
          nodes.PublishOnA();
          const int64_t before = nodes.Stats().deltas_applied;
          ExchangeTimes t = nodes.Exchange(/*keyframe=*/false);
          if (nodes.Stats().deltas_applied != before + 1) Die("the delta was not applied");
          d = t.total;
          delta_runs.push_back(t);
          delta_s.push_back(d);
          break;
        }
        case 2: {
          const int64_t before = nodes.Stats().keyframes_applied;
          ExchangeTimes t = nodes.Exchange(/*keyframe=*/true);
          if (nodes.Stats().keyframes_applied != before + 1) Die("the keyframe was not applied");
          k = t.total;
          key_runs.push_back(t);
          key_s.push_back(k);
          break;
        }
      }
    }
    delta_ratio.push_back(a / d);
    key_ratio.push_back(a / k);
    std::printf("round %d: aead enc+dec %.1f ms, delta exchange %.1f ms (ratio %.2f), keyframe exchange %.1f ms "
                "(ratio %.2f)\n",
                r + 1, a * 1e3, d * 1e3, a / d, k * 1e3, a / k);
    std::fflush(stdout);
  }
  if (!nodes.MirrorMatches()) Die("B's mirror does not match A's public copy");
  if (!nodes.WeightsFinite()) Die("B's weights went non-finite");

  const double aead_m = Median(aead_s), enc_m = Median(aead_enc_s), delta_m = Median(delta_s), key_m = Median(key_s);
  std::printf("\n");
  PrintSplit("delta exchange", delta_runs, aead_m);
  PrintSplit("keyframe exchange", key_runs, aead_m);
  std::printf("\naead xchacha20poly1305: enc+dec %s (enc alone %s), %.1f ms median\n",
              Rate(bytes / aead_m).c_str(), Rate(bytes / enc_m).c_str(), aead_m * 1e3);
  std::printf("delta exchange:    %.3g params/s = %s, %.1f ms median\n", args.params / delta_m,
              Rate(bytes / delta_m).c_str(), delta_m * 1e3);
  std::printf("keyframe exchange: %.3g params/s = %s, %.1f ms median\n", args.params / key_m,
              Rate(bytes / key_m).c_str(), key_m * 1e3);
  Pieces p = MeasurePieces(args.params, args.smoke ? 1 : 3);
  std::printf("reference pieces on the %.1f MB payload (ms): memcpy warm %.1f, copy into a fresh allocation %.1f, "
              "Codec::Decode %.1f, naive isfinite scan %.1f, naive double L2 norm %.1f, float accumulate %.1f\n",
              bytes / 1e6, p.copy_warm * 1e3, p.copy_fresh * 1e3, p.decode * 1e3, p.finite * 1e3,
              p.l2norm * 1e3, p.accumulate * 1e3);
  for (size_t n : {args.params, size_t{100000}}) {
    if (n == 100000 && args.params == 100000) continue;
    std::printf("\ncodecs on %zu values (%.1f MB fp32), median of %d round(s):\n", n, n * 4 / 1e6,
                args.smoke ? 1 : 5);
    for (const CodecTimes& c : MeasureCodecs(n, args.smoke ? 1 : 5)) {
      if (c.name == "floor") {
        std::printf("floor (read n floats, then memset n floats): %.2fx memcpy (%s vs memcpy %s; read %.3f ms, "
                    "write %.3f ms)\n",
                    c.ratio, Rate(4.0 * n / c.codec_s).c_str(), Rate(4.0 * n / c.memcpy_s).c_str(),
                    c.encode_s * 1e3, c.decode_s * 1e3);
        continue;
      }
      std::printf("codec %s: encode+decode %.2fx memcpy (%s vs memcpy %s), %.1f KB per 100k values "
                  "(encode %.3f ms, decode %.3f ms, n=%zu)\n",
                  c.name.c_str(), c.ratio, Rate(4.0 * n / c.codec_s).c_str(), Rate(4.0 * n / c.memcpy_s).c_str(),
                  c.payload * (1e5 / n) / 1e3, c.encode_s * 1e3, c.decode_s * 1e3, n);
    }
  }
  std::printf("load average at end: %s\n", LoadAvg().c_str());
  std::printf("exchange/aead ratio: %.2f (exchange %.2g params/s = %.0f MB/s, xchacha20poly1305 enc+dec %.0f MB/s; "
              "keyframe %.2f)\n",
              Median(delta_ratio), args.params / delta_m, bytes / delta_m / 1e6, bytes / aead_m / 1e6,
              Median(key_ratio));
  return 0;
}
