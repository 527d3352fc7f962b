#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "metrics/exposition.h"
#include "metrics/metrics_server.h"

namespace mycel::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(ExpositionTest, WritesTheTextFormat) {
  Exposition e;
  e.Family("mycel_training_steps_total", "counter", "Training steps taken.");
  e.Sample(1234);
  e.Family("mycel_peer_refusals_total", "counter", "Refusals, by neighbour\nand reason \\ word.");
  e.Sample(3, {{"peer", "bob's \"laptop\"\n2"}, {"reason", "tampered"}});
  e.Sample(9007199254740992.0, {{"peer", "back\\slash"}, {"reason", "stale"}});
  e.Family("mycel_validation_loss", "gauge", "Loss of the last validation pass.");
  e.Sample(std::numeric_limits<double>::quiet_NaN());
  e.Sample(std::numeric_limits<double>::infinity(), {{"x", "a"}});
  e.Sample(-std::numeric_limits<double>::infinity(), {{"x", "b"}});
  e.Sample(0.25, {{"x", "c"}});
  EXPECT_EQ(e.Take(),
            "# HELP mycel_training_steps_total Training steps taken.\n"
            "# TYPE mycel_training_steps_total counter\n"
            "mycel_training_steps_total 1234\n"
            "# HELP mycel_peer_refusals_total Refusals, by neighbour\\nand reason \\\\ word.\n"
            "# TYPE mycel_peer_refusals_total counter\n"
            "mycel_peer_refusals_total{peer=\"bob's \\\"laptop\\\"\\n2\",reason=\"tampered\"} 3\n"
            "mycel_peer_refusals_total{peer=\"back\\\\slash\",reason=\"stale\"} 9007199254740992\n"
            "# HELP mycel_validation_loss Loss of the last validation pass.\n"
            "# TYPE mycel_validation_loss gauge\n"
            "mycel_validation_loss NaN\n"
            "mycel_validation_loss{x=\"a\"} +Inf\n"
            "mycel_validation_loss{x=\"b\"} -Inf\n"
            "mycel_validation_loss{x=\"c\"} 0.25\n");
  EXPECT_EQ(e.Take(), "");
}

struct HttpReply {
  int status = 0;
  std::string head;  // status line and headers
  std::string body;
};

// A plain HTTP/1.0 request over a real TCP socket to 127.0.0.1:port.
HttpReply Http(int port, const std::string& method, const std::string& path,
               const std::string& host = "127.0.0.1") {
  HttpReply r;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return r;
  }
  std::string req = method + " " + path + " HTTP/1.0\r\n" + (host.empty() ? "" : "Host: " + host + "\r\n") + "\r\n";
  EXPECT_EQ(write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  std::string all;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) all.append(buf, static_cast<size_t>(n));
  close(fd);
  auto split = all.find("\r\n\r\n");
  if (split == std::string::npos) return r;
  r.head = all.substr(0, split);
  r.body = all.substr(split + 4);
  if (r.head.size() > 12) r.status = std::stoi(r.head.substr(9, 3));
  return r;
}

TEST(MetricsServerTest, ServesTheRenderedTextOnEveryScrape) {
  std::atomic<int> scrapes{0};
  auto server = MetricsServer::Start("127.0.0.1:0", [&] {
    Exposition e;
    e.Family("mycel_scrapes_total", "counter", "Scrapes.");
    e.Sample(++scrapes);
    return e.Take();
  });
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  ASSERT_GT(port, 0);

  HttpReply r = Http(port, "GET", "/metrics");
  EXPECT_EQ(r.status, 200) << r.head;
  EXPECT_THAT(r.head, HasSubstr("Content-Type: text/plain; version=0.0.4; charset=utf-8"));
  EXPECT_THAT(r.body, HasSubstr("\nmycel_scrapes_total 1\n"));
  r = Http(port, "GET", "/metrics");
  EXPECT_THAT(r.body, HasSubstr("\nmycel_scrapes_total 2\n"));

  r = Http(port, "HEAD", "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "");

  r = Http(port, "GET", "/");
  EXPECT_EQ(r.status, 404);
  r = Http(port, "POST", "/metrics");
  EXPECT_EQ(r.status, 405);
  EXPECT_THAT(r.head, HasSubstr("Allow: GET, HEAD"));
  EXPECT_EQ(scrapes.load(), 3);  // the two GETs and the HEAD rendered; 404/405 did not

  // Stopped: the port no longer answers.
  server->reset();
  EXPECT_EQ(Http(port, "GET", "/metrics").status, 0);
}

// DNS rebinding: a page of evil.example resolved to 127.0.0.1 still sends
// Host: evil.example, and gets nothing but a 403 (and renders nothing).
TEST(MetricsServerTest, AnswersOnlyRequestsThatNameALoopbackHost) {
  std::atomic<int> scrapes{0};
  auto server = MetricsServer::Start("127.0.0.1:0", [&] {
    ++scrapes;
    return std::string("mycel_up 1\n");
  });
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  const std::string p = ":" + std::to_string(port);
  const std::vector<std::string> loopback = {"127.0.0.1" + p, "localhost" + p, "LocalHost", "localhost.", "[::1]" + p,
                                             ""};
  for (const std::string& host : loopback) {
    EXPECT_EQ(Http(port, "GET", "/metrics", host).status, 200) << "Host: " << host;
  }
  EXPECT_EQ(scrapes.load(), 6);
  const std::vector<std::string> elsewhere = {"evil.example" + p, "evil.example", "127.0.0.1.evil.example",
                                              "localhost.evil", "[::1]x", "[::1", "127.0.0.2", "0.0.0.0" + p};
  for (const std::string& host : elsewhere) {
    HttpReply r = Http(port, "GET", "/metrics", host);
    EXPECT_EQ(r.status, 403) << "Host: " << host;
    EXPECT_THAT(r.body, HasSubstr("Host must be a loopback name")) << host;
  }
  EXPECT_EQ(scrapes.load(), 6);
}

TEST(MetricsServerTest, RefusesNonLoopbackAndBusyAddressesClearly) {
  auto render = [] { return std::string(); };
  auto s = MetricsServer::Start("0.0.0.0:0", render);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("not a loopback address"));
  s = MetricsServer::Start("10.1.2.3:9464", render);
  ASSERT_FALSE(s.ok());

  auto first = MetricsServer::Start("127.0.0.1:0", render);
  ASSERT_TRUE(first.ok());
  const std::string taken = "127.0.0.1:" + std::to_string((*first)->port());
  s = MetricsServer::Start(taken, render);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), StartsWith("metrics_listen: cannot listen on " + taken));
}

}  // namespace
}  // namespace mycel::metrics
