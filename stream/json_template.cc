#include "stream/json_template.h"

#include <random>

#include "util/error.h"

namespace storemove::stream {
namespace {

std::string Dump(const nlohmann::json& j) { return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace); }

// `text` with `indent` after each line break.
void PutIndented(std::FILE* out, std::string_view text, const std::string& indent) {
  size_t from = 0;
  for (size_t nl; (nl = text.find('\n', from)) != std::string_view::npos; from = nl + 1) {
    std::fwrite(text.data() + from, 1, nl + 1 - from, out);
    std::fputs(indent.c_str(), out);
  }
  std::fwrite(text.data() + from, 1, text.size() - from, out);
}

// A random word of this process in every placeholder: text of the document (a group's regular
// expression, from a file) cannot spell one (helper-165 made a regex that did, and the array
// went inside the regex's string).
const std::string& PlaceholderNonce() {
  static const std::string nonce = [] {
    std::random_device random;
    char hex[33];
    std::snprintf(hex, sizeof hex, "%08x%08x%08x%08x", random(), random(), random(), random());
    return std::string(hex);
  }();
  return nonce;
}

}  // namespace

std::string JsonArrayPlaceholder(const std::string& name) {
  return "\x01storemove-array:" + name + ":" + PlaceholderNonce() + "\x01";
}

void WriteJsonTemplate(std::FILE* out, const nlohmann::json& doc, const std::string& indent, const JsonArrays& arrays) {
  const std::string text = Dump(doc);
  // Each placeholder as the text has it (a quoted, escaped string), checked to be there once
  // before anything is written.
  std::vector<std::string> dumped;
  for (const auto& array : arrays) {
    dumped.push_back(nlohmann::json(JsonArrayPlaceholder(array.first)).dump());
    const size_t found = text.find(dumped.back());
    if (found == std::string::npos || text.find(dumped.back(), found + 1) != std::string::npos)
      Throw(Errc::kInvalidArgument, "a JSON document's array '" + array.first + "' is not in it once");
  }
  size_t from = 0;
  for (;;) {
    // The next placeholder in the text.
    size_t at = std::string::npos;
    const JsonArrays::value_type* which = nullptr;
    size_t length = 0;
    for (size_t i = 0; i < arrays.size(); ++i) {
      const size_t found = text.find(dumped[i], from);
      if (found < at) {
        at = found;
        which = &arrays[i];
        length = dumped[i].size();
      }
    }
    if (!which) break;
    PutIndented(out, std::string_view(text).substr(from, at - from), indent);
    const size_t line = text.rfind('\n', at);
    const size_t line_start = line == std::string::npos ? 0 : line + 1;
    const size_t spaces = text.find_first_not_of(' ', line_start) - line_start;
    JsonArrayOut array(out, indent + std::string(spaces, ' '));
    which->second(array);
    array.End();
    from = at + length;
  }
  PutIndented(out, std::string_view(text).substr(from), indent);
}

void JsonArrayOut::Next() {
  std::fputs(any_ ? ",\n" : "[\n", out_);
  std::fputs(indent_.c_str(), out_);
  std::fputs("  ", out_);
  any_ = true;
}

void JsonArrayOut::Add(const nlohmann::json& element) {
  Next();
  PutIndented(out_, Dump(element), indent_ + "  ");
}

void JsonArrayOut::AddTemplate(const nlohmann::json& element, const JsonArrays& arrays) {
  Next();
  WriteJsonTemplate(out_, element, indent_ + "  ", arrays);
}

void JsonArrayOut::End() {
  if (!any_) {
    std::fputs("[]", out_);
    return;
  }
  std::fputs("\n", out_);
  std::fputs(indent_.c_str(), out_);
  std::fputs("]", out_);
}

}  // namespace storemove::stream
