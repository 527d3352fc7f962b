// The session handshake as both ends parse what the other sent, before and
// after authentication: the server's ServerSession::Accept on a Hello (the
// first bytes any caller of the peer port gets to send), and the client's
// AcceptReply and Open on a Reply and sealed chunks. Contract
// (crypto/session.h): anything that is not exactly what the pinned peer
// signed and sealed is refused with a reason word; nothing forged is ever
// accepted.
//
// Input: [which][rest...]; for the client, the rest is split into a Reply
// and chunks at 2-byte lengths.
#include <memory>
#include <string>
#include <vector>

#include "crypto/identity.h"
#include "crypto/session.h"
#include "fuzz_common.h"

namespace {

struct Keys {
  std::unique_ptr<mycel::crypto::Identity> server = std::move(mycel::crypto::Identity::Generate()).value();
  std::unique_ptr<mycel::crypto::Identity> client = std::move(mycel::crypto::Identity::Generate()).value();
};

const int64_t kNow = 1'800'000'000;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mycel;
  static Keys keys;
  fuzz::Input in(data, size);
  const uint8_t which = in.Byte();
  if (which % 2 == 0) {
    crypto::ReplayGuard replay(120, kNow - 60);
    const std::vector<std::string> pinned = {keys.client->public_key()};
    auto session = crypto::ServerSession::Accept(*keys.server, pinned, replay, in.Rest(), kNow);
    // Forging the client's signature is out of reach of a fuzzer: only refusals.
    MYCEL_FUZZ_CHECK(!session.ok());
    MYCEL_FUZZ_CHECK(!RefusalName(RefusalOf(session.status())).empty());
    return 0;
  }
  auto client = std::move(crypto::ClientSession::Begin(*keys.client, keys.server->public_key(), "req", kNow)).value();
  const std::string_view reply = in.Take(in.U16());
  auto header = client->AcceptReply(reply);
  MYCEL_FUZZ_CHECK(!header.ok());  // a Reply must be signed by the pinned server
  std::string out;
  bool final = false;
  while (!in.Rest().empty()) {
    const std::string_view chunk = in.Take(in.U16());
    MYCEL_FUZZ_CHECK(!client->OpenAppend(chunk, &out, &final).ok());  // no key, nothing opens
  }
  MYCEL_FUZZ_CHECK(!client->Finish().ok());
  return 0;
}
