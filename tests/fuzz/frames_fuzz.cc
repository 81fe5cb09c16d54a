// The network session frames (stream/net_conn.h) without TLS: the input arrives on a real
// socket (a socketpair, the peer side closed after writing), and ReadFrame reads frames until
// the end; each payload goes to its decoder (QUERY, ANSWER, RESULT, ERROR, REQUEST's JSON).
// Invariants: only storemove::Error escapes; a frame read is within its type's limit; QUERY and
// ANSWER payloads that decode re-encode to the same bytes.
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "stream/net_conn.h"
#include "tests/fuzz/fuzz_support.h"

namespace net = storemove::stream::net;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (64 << 10)) return -1;  // must fit the socket buffer: written before it is read
  int sv[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  storemove::UniqueFd writer(sv[1]);
  int buffer = 256 << 10;
  ::setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
  for (size_t done = 0; done < size;) {
    ssize_t n = ::write(sv[1], data + done, size - done);
    FUZZ_CHECK(n > 0);
    done += size_t(n);
  }
  writer.reset();  // the peer hangs up: reads end instead of waiting
  net::Connection conn(storemove::UniqueFd(sv[0]), "fuzz-peer");
  conn.SetTimeout(5);
  conn.set_authenticated();  // as the server does after the (no-op) handshake
  size_t last_query = 0;
  storemove::fuzz::OnlyStoremoveErrors("frames", [&] {
    for (;;) {
      net::Frame f = net::ReadFrame(conn);  // throws at the end of the input
      FUZZ_CHECK(net::FrameName(f.type) != nullptr);
      FUZZ_CHECK(f.payload.size() <= net::MaxFramePayload(f.type));
      storemove::fuzz::OnlyStoremoveErrors("frame payload", [&] {
        switch (f.type) {
          case net::FrameType::kQuery: {
            net::Query q = net::DecodeQuery(f.payload);
            FUZZ_CHECK(net::EncodeQuery(q) == f.payload);
            last_query = q.contents.size();
            break;
          }
          case net::FrameType::kAnswer: {
            std::vector<bool> have = net::DecodeAnswer(f.payload, last_query);
            FUZZ_CHECK(have.size() == last_query);
            // Unused high bits of the last byte are ignored, so compare through the decoder.
            FUZZ_CHECK(net::DecodeAnswer(net::EncodeAnswer(have), last_query) == have);
            break;
          }
          case net::FrameType::kResult: {
            storemove::stream::SessionReport r = net::ReportFromJson(f.payload);
            storemove::stream::SessionReport back = net::ReportFromJson(net::ReportToJson(r));
            FUZZ_CHECK(back.messages == r.messages && back.error_lines == r.error_lines);
            break;
          }
          case net::FrameType::kError: net::ThrowErrorFrame(f, "fuzz-peer");
          case net::FrameType::kRequest: {
            // As the server parses it: bounded, a set-status's statuses taken out of the tree.
            std::vector<std::pair<std::string, std::string>> statuses;
            net::FrameJsonSinks sinks;
            sinks.statuses = &statuses;
            nlohmann::json tree = net::ParseFrameJson(f.payload, "fuzz REQUEST", sinks);
            nlohmann::json whole = nlohmann::json::parse(f.payload);  // parsed above: valid JSON
            if (whole.is_object() && whole.contains("statuses") && whole["statuses"].is_array()) {
              // (A key given twice: the tree keeps the last array, the list has them all.)
              const nlohmann::json& list = whole["statuses"];
              FUZZ_CHECK(tree["statuses"].empty());
              FUZZ_CHECK(statuses.size() >= list.size());
              const size_t first = statuses.size() - list.size();
              for (size_t i = 0; i < list.size(); ++i) {
                FUZZ_CHECK(list[i]["user"] == statuses[first + i].first);
                FUZZ_CHECK(list[i]["status"] == statuses[first + i].second);
              }
            }
            break;
          }
          case net::FrameType::kReady:
            // The server parses these as JSON and reports bad ones as kProtocol.
            try {
              nlohmann::json j = nlohmann::json::parse(f.payload);
              FUZZ_CHECK(nlohmann::json::parse(j.dump()) == j);
            } catch (const nlohmann::json::exception&) {
            }
            break;
          default: break;
        }
      });
    }
  });
  return 0;
}
