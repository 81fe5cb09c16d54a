// The stream decoder through its public API (format/format.h, format/zstd_codec.h) on hostile
// bytes. Invariants: only storemove::Error escapes; a stream the decoder accepts has folder ends
// and a trailer whose counts match the records seen, bodies that add up to their messages' sizes,
// and the encoder (which enforces the same rules) accepts the same records again.
//
// The input is the stream itself (so real backups are seeds as they are); its length modulo 4
// picks how it is fed: 0 as is (zstd or not, detected), 1 in 7-byte reads, 2 compressed here
// first (so mutations of plain streams reach the decoder through zstd), 3 with the decompression
// worker thread.
#include <algorithm>
#include <cstring>
#include <optional>

#include <zstd.h>

#include "format/format.h"
#include "format/zstd_codec.h"
#include "tests/fuzz/fuzz_support.h"

namespace sf = storemove::format;

namespace {

class ChunkedSource final : public sf::ByteSource {
 public:
  explicit ChunkedSource(std::string_view data) : data_(data) {}
  size_t Read(void* out, size_t size) override {
    size_t n = std::min({size, data_.size(), size_t{7}});
    std::memcpy(out, data_.data(), n);
    data_.remove_prefix(n);
    return n;
  }

 private:
  std::string_view data_;
};

struct Counts {
  uint64_t users = 0, folders = 0, messages = 0, links = 0, body_bytes = 0, metas = 0;
};

// Decodes everything `source` yields, re-encoding as it goes; returns the trailer when accepted.
std::optional<sf::Trailer> DecodeAll(sf::ByteSource& source, bool reencode, std::string* reencoded) {
  sf::Decoder decoder(source);
  sf::StringSink sink;
  std::optional<sf::Encoder> encoder;
  if (reencode) encoder.emplace(sink);
  bool encoder_failed = false;
  std::string encoder_error;
  auto enc = [&](auto&& call) {
    if (!encoder || encoder_failed) return;
    try {
      call(*encoder);
    } catch (const storemove::Error& e) {
      encoder_failed = true;
      encoder_error = e.what();
    }
  };
  Counts seen, in_folder;
  uint64_t message_body = 0;
  bool manifest = false;
  std::optional<sf::Trailer> result;
  bool ok = storemove::fuzz::OnlyStoremoveErrors("decoder", [&] {
    for (;;) {
      sf::Decoder::Event event = decoder.Next();
      switch (event) {
        case sf::Decoder::Event::kHeader:
          manifest = decoder.header().kind == sf::StreamKind::kManifest;
          // The encoder writes only its own version: an older stream (1.0) re-encodes as the
          // current one, its 1.1 fields zero.
          enc([&](sf::Encoder& e) {
            sf::StreamHeader h = decoder.header();
            h.version_major = sf::kVersionMajor;
            h.version_minor = sf::kVersionMinor;
            e.WriteHeader(h);
          });
          break;
        case sf::Decoder::Event::kUser:
          ++seen.users;
          enc([&](sf::Encoder& e) { e.WriteUser(decoder.user()); });
          break;
        case sf::Decoder::Event::kFolder:
          ++seen.folders;
          in_folder = {};
          FUZZ_CHECK(decoder.folder().user_flag_names.size() <= sf::kMaxUserFlagNames);
          FUZZ_CHECK(decoder.folder().since_modseq <= decoder.folder().modseq);
          enc([&](sf::Encoder& e) { e.WriteFolder(decoder.folder()); });
          break;
        case sf::Decoder::Event::kMessage:
          ++seen.messages, ++in_folder.messages;
          in_folder.body_bytes += decoder.message().size;
          message_body = 0;
          FUZZ_CHECK(decoder.message().size <= sf::kMaxMessageSize);
          FUZZ_CHECK(decoder.message().header_size <= decoder.message().size);
          enc([&](sf::Encoder& e) { e.BeginMessage(decoder.message()); });
          break;
        case sf::Decoder::Event::kBody:
          FUZZ_CHECK(!manifest);
          FUZZ_CHECK(!decoder.body().empty() && decoder.body().size() <= sf::kMaxBodyChunk);
          message_body += decoder.body().size();
          seen.body_bytes += decoder.body().size();
          FUZZ_CHECK(message_body <= decoder.message().size);
          enc([&](sf::Encoder& e) { e.BodyChunk(decoder.body()); });
          break;
        case sf::Decoder::Event::kMessageEnd:
          FUZZ_CHECK(message_body == (manifest ? 0 : decoder.message().size));
          enc([&](sf::Encoder& e) { e.EndMessage(); });
          break;
        case sf::Decoder::Event::kLink:
          ++seen.links, ++in_folder.links;
          in_folder.body_bytes += decoder.link().size;
          FUZZ_CHECK(decoder.link().content_id >= 1 && decoder.link().content_id <= seen.messages);
          enc([&](sf::Encoder& e) { e.WriteLink(decoder.link()); });
          break;
        case sf::Decoder::Event::kHeld:
          FUZZ_CHECK(decoder.header().kind == sf::StreamKind::kSession);
          ++seen.messages, ++in_folder.messages;
          in_folder.body_bytes += decoder.held().size;
          enc([&](sf::Encoder& e) { e.WriteHeld(decoder.held()); });
          break;
        case sf::Decoder::Event::kMeta:
          FUZZ_CHECK(decoder.folder().since_modseq != 0 && !decoder.folder().unchanged());
          FUZZ_CHECK(decoder.meta().content_id == 0);
          ++in_folder.metas;
          enc([&](sf::Encoder& e) { e.WriteMeta(decoder.meta()); });
          break;
        case sf::Decoder::Event::kFolderEnd:
          FUZZ_CHECK(decoder.folder_end().messages == in_folder.messages);
          FUZZ_CHECK(decoder.folder_end().links == in_folder.links);
          FUZZ_CHECK(decoder.folder_end().bytes == in_folder.body_bytes);
          FUZZ_CHECK(decoder.folder_end().metas == in_folder.metas);
          FUZZ_CHECK(!decoder.folder().unchanged() || in_folder.messages + in_folder.links + in_folder.metas == 0);
          enc([&](sf::Encoder& e) {
            if (decoder.folder_end().has_summary)
              e.EndFolder(decoder.folder_end().summary);
            else
              e.EndFolder();
          });
          break;
        case sf::Decoder::Event::kEnd: {
          const sf::Trailer& t = decoder.trailer();
          FUZZ_CHECK(t.users == seen.users);
          FUZZ_CHECK(t.folders == seen.folders);
          FUZZ_CHECK(t.messages == seen.messages);
          FUZZ_CHECK(t.links == seen.links);
          FUZZ_CHECK(t.body_bytes == seen.body_bytes);
          FUZZ_CHECK(decoder.Next() == sf::Decoder::Event::kEnd);  // repeats kEnd
          enc([&](sf::Encoder& e) { e.Finish(); });
          result = t;
          return;
        }
      }
    }
  });
  if (!ok) {
    // After a throw every Next() throws again.
    bool threw = false;
    try {
      decoder.Next();
    } catch (const storemove::Error&) {
      threw = true;
    }
    FUZZ_CHECK(threw);
    return std::nullopt;
  }
  if (encoder_failed) {
    std::fprintf(stderr, "decoder accepted a stream the encoder refuses: %s\n", encoder_error.c_str());
    std::abort();
  }
  if (reencoded) *reencoded = sink.Take();
  return result;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::optional<sf::Trailer> trailer;
  std::string reencoded;
  switch (size % 4) {
    case 0: {
      sf::StringSource raw(input);
      sf::DecompressingSource source(raw);
      trailer = DecodeAll(source, true, &reencoded);
      break;
    }
    case 1: {
      ChunkedSource raw(input);
      sf::DecompressingSource source(raw);
      trailer = DecodeAll(source, true, &reencoded);
      break;
    }
    case 2: {
      // Plain zstd from one reused context: ZstdCompressSink's 32 MiB long-distance window costs
      // seconds to set up per input, and the decoder side does not care how the frame was made.
      static ZSTD_CCtx* cctx = ZSTD_createCCtx();
      std::string compressed(ZSTD_compressBound(size), '\0');
      size_t n = ZSTD_compressCCtx(cctx, compressed.data(), compressed.size(), data, size, 1);
      FUZZ_CHECK(!ZSTD_isError(n));
      compressed.resize(n);
      sf::StringSource raw(compressed);
      sf::DecompressingSource source(raw);
      trailer = DecodeAll(source, true, &reencoded);
      break;
    }
    case 3: {
      sf::StringSource raw(input);
      sf::DecompressingSource source(raw, /*worker=*/true);
      trailer = DecodeAll(source, true, &reencoded);
      break;
    }
  }
  if (trailer) {
    // What the encoder wrote from the accepted records is a valid stream with the same counts.
    sf::StringSource again(reencoded);
    std::optional<sf::Trailer> second = DecodeAll(again, false, nullptr);
    FUZZ_CHECK(second.has_value());
    FUZZ_CHECK(second->users == trailer->users && second->folders == trailer->folders &&
               second->messages == trailer->messages && second->links == trailer->links &&
               second->body_bytes == trailer->body_bytes);
  }
  return 0;
}
