#include "peer/pull_client.h"

#include <chrono>
#include <mutex>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "common/clock.h"
#include "common/refusal.h"
#include "common/status.h"
#include "federation/federation.h"
#include "peer/pull_header.h"

namespace mycel::peer {
namespace {

// A neighbour's refusal of our call, as it worded it: its status message
// starts with its reason word ("unpinned_key: ..."). That text is all the
// wire carries (and gRPC statuses are not authenticated), so the word is
// looked up in the fixed vocabulary, an unknown one counting as "error",
// and the per-reason counters stay bounded.
absl::Status NeighbourRefusal(const std::string& message) {
  return WithRefusal(absl::PermissionDeniedError(message), RefusalNamed(message.substr(0, message.find(':'))));
}

}  // namespace

// One answer being read: the call, the session that opens it, and what has
// come so far (pulled->bytes).
struct PullClient::Call {
  grpc::ClientContext& ctx;
  crypto::ClientSession& session;
  double began;  // monotonic s, when the call began
  Pulled* pulled;
  std::function<bool(PullChunk*)> read;
  std::function<grpc::Status()> finish;
  PullChunk chunk;  // the last one read

  // Reads the next chunk into `chunk`, counting its bytes; false at the end.
  bool Next() {
    if (!read(&chunk)) return false;
    pulled->bytes += chunk.ByteSizeLong();
    return true;
  }
  // Ends the call before its end (cancelled, then finished), with `s`.
  absl::Status Fail(absl::Status s) {
    ctx.TryCancel();
    finish();
    return s;
  }
  absl::Status TooSlow(const char* what) const {
    const double elapsed = Clock::Real()->MonotonicSeconds() - began;
    return Refuse(Refusal::kTooSlow, std::string(what) + ": " + std::to_string(pulled->bytes) + " bytes in " +
                                         std::to_string(elapsed) + " s");
  }
};

PullClient::PullClient(const GossipOptions& options, const crypto::Identity& identity, federation::Federation& fed,
                       GossipState& state)
    : options_(options), identity_(identity), fed_(fed), state_(state), rx_(ReceiveBufferKeepBytes(fed.size())) {}

absl::Status PullClient::PullFrom(const Roster& r, int j, Pulled* pulled) {
  const auto& peer = r.peers[j];
  auto [epoch, after] = fed_.Cursor(j);
  PullParams params;
  params.set_epoch(epoch);
  params.set_after_seq(after);
  params.set_fingerprint(options_.fingerprint);
  params.set_layout(options_.layout);
  params.set_sender_name(options_.node_name);
  params.set_dial_out(options_.dial_out);
  {
    std::lock_guard<std::mutex> lock(state_.mu);
    params.set_listen_port(static_cast<uint32_t>(state_.totals.listen_port));
  }
  MYCEL_ASSIGN_OR_RETURN(auto session, crypto::ClientSession::Begin(identity_, peer.public_key,
                                                                    params.SerializeAsString(),
                                                                    Clock::Real()->UnixSeconds()));
  grpc::ClientContext ctx;
  const double began = Clock::Real()->MonotonicSeconds();
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(options_.schedule.pull_timeout_s * 1000)));
  if (!options_.dial_out) {
    PullRequest req;
    req.set_hello(session->hello());
    auto reader = r.stubs[j]->Pull(&ctx, req);
    Call call{ctx, *session, began, pulled, [&](PullChunk* c) { return reader->Read(c); },
              [&] { return reader->Finish(); }, {}};
    return Receive(call, j, nullptr);
  }
  auto exchange = r.stubs[j]->Exchange(&ctx);
  ExchangeUp up;
  up.set_hello(session->hello());
  exchange->Write(up);  // a failure shows in the first Read
  Call call{ctx, *session, began, pulled, [&](PullChunk* c) { return exchange->Read(c); },
            [&] { return exchange->Finish(); }, {}};
  return Receive(call, j,
                 [&](const PullHeader& asked) { return HandOver(asked, *session, exchange.get(), pulled); });
}

// Our deltas after (asked.want_epoch, asked.want_after_seq), sealed up the
// Exchange, then our half of the call closed. False if the neighbour went away.
bool PullClient::HandOver(const PullHeader& asked, crypto::ClientSession& session,
                          grpc::ClientReaderWriter<ExchangeUp, PullChunk>* call, Pulled* pulled) {
  federation::SharedPullAnswer shared = fed_.AnswerShared(asked.want_epoch(), asked.want_after_seq());
  PayloadPieces payload(shared);
  auto stream = session.StartUpstream();
  if (!stream.ok()) return false;
  ExchangeUp up;
  up.set_stream(*stream);
  session.SealUpTo(MakeHeader(options_, fed_.size(), shared, payload).SerializeAsString(), /*final=*/false,
                   up.mutable_sealed());
  pulled->sent += up.ByteSizeLong();
  if (!call->Write(up)) return false;
  up.clear_stream();
  const bool delivered = SealPayload(payload, SealUp(session), up.mutable_sealed(), [&] {
    pulled->sent += up.ByteSizeLong();
    return call->Write(up);
  }, kUpChunkBytes);
  return call->WritesDone() && delivered;
}

// Reads an answer over `call`, checks and applies it. `hand_over` (Exchange
// only) runs after the answer's FINAL chunk when the header asks for our
// deltas; the call's status then says whether the neighbour took them.
absl::Status PullClient::Receive(Call& call, int j, const std::function<bool(const PullHeader&)>& hand_over) {
  PullHeader header;
  MYCEL_RETURN_IF_ERROR(ReadHeader(call, &header));
  // Every chunk is opened straight into this one buffer, reused across pulls.
  ReceiveBuffer::Use rx_use(rx_, header.payload_bytes());
  std::string& payload = rx_use.payload();
  MYCEL_RETURN_IF_ERROR(ReadPayload(call, header, &payload));
  // Our half, if asked, before the neighbour ends the call.
  const bool handed = hand_over && header.hand_over() && hand_over(header);
  // Nothing may follow the FINAL chunk: a neighbour that streams on would
  // hold the pull until its deadline and still count as a success.
  if (call.Next()) return call.Fail(Refuse(Refusal::kTrailingData, "chunks after the final one"));
  if (auto s = call.session.Finish(); !s.ok()) return call.Fail(s);
  if (payload.size() != header.payload_bytes()) {
    return call.Fail(Refuse(Refusal::kTruncated, "payload shorter than its header says"));
  }
  // Applied from views into the payload: nothing is copied out first.
  federation::PullAnswerView answer = AnswerView(header);
  // Before finish(): Fail() finishes the call itself (finishing twice aborts in gRPC).
  if (auto s = DecodePayload(payload, header.keyframe(), header.count(), &answer); !s.ok()) return call.Fail(s);
  // The stream has ended (the read above said so): the status is here.
  if (grpc::Status gs = call.finish(); !gs.ok()) {
    if (!header.hand_over()) return Refuse(Refusal::kTruncated, "the answer ended with " + gs.error_message());
    // The answer is whole; only our hand-over was refused. Take the answer
    // and say why they did not take ours.
    state_.NoteHandOverRefused(
        j, handed ? gs.error_message() : "our hand-over did not reach them: " + gs.error_message());
  } else if (handed) {
    std::lock_guard<std::mutex> lock(state_.mu);
    state_.status[j].handed_over++;
  }
  MYCEL_RETURN_IF_ERROR(fed_.Apply(j, answer));
  call.pulled->keyframe = answer.keyframe;
  call.pulled->deltas = answer.keyframe ? 0 : static_cast<int64_t>(answer.deltas.size());
  return absl::OkStatus();
}

// The first chunk: the neighbour's signed Reply, whose header is checked
// before anything is allocated for its claims.
absl::Status PullClient::ReadHeader(Call& call, PullHeader* header) {
  if (!call.Next()) {
    grpc::Status gs = call.finish();
    if (gs.error_code() == grpc::StatusCode::UNAVAILABLE || gs.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return absl::UnavailableError("unreachable: " + gs.error_message());
    }
    return NeighbourRefusal(gs.error_message() + ": refused by the neighbour");
  }
  auto header_bytes = call.session.AcceptReply(call.chunk.reply());
  if (!header_bytes.ok()) return call.Fail(header_bytes.status());
  if (!header->ParseFromString(*header_bytes)) {
    return call.Fail(Refuse(Refusal::kMalformed, "reply header does not parse"));
  }
  // Bound what we accept before allocating anything for it.
  if (auto s = CheckHeader(options_, fed_.size(), *header); !s.ok()) return call.Fail(s);
  return absl::OkStatus();
}

// The sealed chunks, opened onto *payload up to and with the FINAL one, at
// no less than the least transfer rate.
absl::Status PullClient::ReadPayload(Call& call, const PullHeader& header, std::string* payload) {
  bool final = false;
  const OpenFn open = OpenDown(call.session);
  while (!final && call.Next()) {
    const double elapsed = Clock::Real()->MonotonicSeconds() - call.began;
    if (elapsed > options_.min_transfer_grace_s &&
        static_cast<double>(call.pulled->bytes) < options_.min_transfer_bytes_per_s * elapsed) {
      return call.Fail(call.TooSlow("below the least transfer rate"));
    }
    if (auto s = OpenChunk(open, call.chunk.sealed(), header.payload_bytes(), payload, &final); !s.ok()) {
      return call.Fail(s);
    }
  }
  if (final) return absl::OkStatus();
  // The stream ended before the FINAL chunk: the deadline, or the
  // neighbour gave up. finish() here is the only call's end.
  grpc::Status gs = call.finish();
  if (gs.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return call.TooSlow("the answer did not finish within pull_timeout_s");
  }
  absl::Status s = call.session.Finish();  // "truncated", in the session's own words
  return s.ok() ? Refuse(Refusal::kTruncated, "the answer ended before its final chunk") : s;
}

}  // namespace mycel::peer
