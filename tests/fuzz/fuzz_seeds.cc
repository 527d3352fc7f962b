// Writes the seed corpora of the fuzz targets from the real encoders, so each
// target starts from inputs that pass its parser's first checks:
//   fuzz_seeds DIR   → DIR/<target>/seed-N
// The committed tests/fuzz/corpus/ was made with it; scripts/fuzz.sh runs
// each target from a copy, so what the fuzzer adds stays out of the tree.
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "crypto/identity.h"
#include "crypto/session.h"
#include "federation/codec.h"
#include "federation/federation.h"

namespace {

std::string dir;

void Write(const std::string& target, int n, const std::string& bytes) {
  const std::string d = dir + "/" + target;
  ::mkdir(d.c_str(), 0755);
  std::ofstream(d + "/seed-" + std::to_string(n), std::ios::binary) << bytes;
}

std::string U16(size_t v) { return std::string{static_cast<char>(v & 0xff), static_cast<char>((v >> 8) & 0xff)}; }

std::string U64(uint64_t v) {
  std::string s;
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mycel;
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds DIR\n");
    return 2;
  }
  dir = argv[1];
  ::mkdir(dir.c_str(), 0755);
  std::vector<float> v(300);
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.01f * static_cast<float>(static_cast<int>(i % 37) - 18);

  // fuzz_codec: [codec index][n][payload], indices as in fuzz_codec.cc.
  const char* const codecs[] = {"dense_f32", "fp16", "int8", "sign", "topk:0.1", "topk:0.5",
                                "topk:1", "topk:0.01+fp16", "topk:0.25+int8", "topk:0.3+sign"};
  for (int c = 0; c < 10; ++c) {
    auto codec = std::move(federation::MakeCodec(codecs[c])).value();
    Write("fuzz_codec", c, std::string(1, static_cast<char>(c)) + U16(v.size()) + codec->Encode(v.data(), v.size()));
  }

  // fuzz_snapshot: snapshots of a federation like the target's, clean and not.
  federation::FederationOptions o = federation::PlainGossip();
  o.drift_correction = 0.9;
  o.codec = "int8";
  auto a = std::move(federation::Federation::Create(o, std::vector<float>(64, 0.5f), 2, 2)).value();
  auto b = std::move(federation::Federation::Create(o, std::vector<float>(64, 0.5f), 2, 2)).value();
  Write("fuzz_snapshot", 0, a->Serialize(true));
  std::vector<float> x(v.begin(), v.begin() + 64);
  for (int round = 0; round < 3; ++round) {
    a->Publish(x.data(), 10);
    b->Publish(x.data(), 5);
    auto answer = b->Answer(0, 0);
    (void)a->Apply(1, answer);
    a->Merge(x.data(), 1.0);
  }
  Write("fuzz_snapshot", 1, a->Serialize(true));
  Write("fuzz_snapshot", 2, a->Serialize(false));

  // fuzz_payload: [flags][count][codec][payload]: a keyframe and int8 deltas.
  std::string keyframe(64 * sizeof(float), '\0');
  std::memcpy(keyframe.data(), x.data(), keyframe.size());
  Write("fuzz_payload", 0, std::string(1, '\1') + U16(0) + std::string(1, '\0') + keyframe);
  auto int8 = std::move(federation::MakeCodec("int8")).value();
  std::string deltas;
  for (int i = 0; i < 2; ++i) {
    const std::string q = int8->Encode(x.data(), 64);
    deltas += U64(q.size()) + q;
  }
  Write("fuzz_payload", 1, std::string(1, '\0') + U16(2) + std::string(1, '\2') + deltas);

  // fuzz_session: a real Hello (refused: another client key) and a real
  // Reply with two sealed chunks (refused: another server key).
  auto server = std::move(crypto::Identity::Generate()).value();
  auto client = std::move(crypto::Identity::Generate()).value();
  auto cs = std::move(crypto::ClientSession::Begin(*client, server->public_key(), "req", 1'800'000'000)).value();
  Write("fuzz_session", 0, std::string(1, '\0') + cs->hello());
  crypto::ReplayGuard replay;
  auto ss = std::move(crypto::ServerSession::Accept(*server, {client->public_key()}, replay, cs->hello(),
                                                    1'800'000'000))
                .value();
  const std::string reply = std::move(ss->Reply("header")).value();
  const std::string c1 = ss->Seal("first chunk", false), c2 = ss->Seal("last", true);
  Write("fuzz_session", 1, std::string(1, '\1') + U16(reply.size()) + reply + U16(c1.size()) + c1 + U16(c2.size()) + c2);

  // fuzz_importers: [format][shape][split][bytes]: idx 2x2 images + labels, CSV, text.
  std::string images = std::string("\x00\x00\x08\x03", 4) + std::string("\x00\x00\x00\x02", 4) +
            std::string("\x00\x00\x00\x02", 4) + std::string("\x00\x00\x00\x02", 4) + "\x01\x02\x03\x04\x05\x06\x07\x08";
  const std::string labels = std::string("\x00\x00\x08\x01", 4) + std::string("\x00\x00\x00\x02", 4) + "\x01\x02";
  Write("fuzz_importers", 0, std::string("\x01\x00", 2) + U16(images.size()) + images + labels);
  Write("fuzz_importers", 1, std::string("\x02\x00", 2) + U16(0) + "1,0,255,3,4\n2,9,8,7,6\n");
  Write("fuzz_importers", 2, std::string("\x03\x02", 2) + U16(0) + "the mycel daemon learns from text\n");

  // fuzz_config: the example config's shape, one of each section.
  Write("fuzz_config", 0,
        "[node]\nname = \"a\"\nlisten = \"127.0.0.1:7070\"\n\n[model]\nkind = \"mlp\"\nhidden = [32]\n\n"
        "[training]\nlr = 0.1\nbatch_size = 32\n\n[federation]\nround_interval_s = 10\nlocal_steps = 40\n"
        "codec = \"fp16\"\n\n[policy]\nthreads = 1\n\n[[peers]]\nname = \"b\"\naddress = \"127.0.0.1:7071\"\n"
        "public_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n");
  // fuzz_h2_screen: [chunk seed][bytes]: what a gRPC client sends for two
  // Pulls (preface, SETTINGS, HEADERS, DATA, the SETTINGS ACK), one padded.
  auto frame = [](int type, int flags, int stream, const std::string& payload) {
    const size_t n = payload.size();
    std::string f{static_cast<char>(n >> 16), static_cast<char>(n >> 8), static_cast<char>(n),
                  static_cast<char>(type), static_cast<char>(flags), 0, 0, 0, static_cast<char>(stream)};
    return f + payload;
  };
  const std::string message = std::string("\0\0\0\0\x20", 5) + std::string(32, 'q');
  const std::string h2 = std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") + frame(4, 0, 0, std::string(6, '\0')) +
                         frame(1, 4, 1, std::string(40, 'h')) + frame(0, 1, 1, message) + frame(4, 1, 0, "") +
                         frame(1, 0, 3, std::string(20, 'h')) + frame(9, 4, 3, std::string(20, 'c')) +
                         frame(0, 9, 3, std::string(1, '\x02') + message + "pp") + frame(3, 0, 5, std::string(4, '\0'));
  Write("fuzz_h2_screen", 0, std::string(1, '\x07') + h2);
  Write("fuzz_h2_screen", 1, std::string(1, '\x01') + h2.substr(0, 60));
  std::printf("seeds written under %s\n", dir.c_str());
  return 0;
}
