// A JSON document written as its lists are read, so its size is not held in memory: the
// document is given with a placeholder (JsonArrayPlaceholder) where each long list goes, and is
// printed as nlohmann's dump(2) prints it, each placeholder replaced by the array its writer
// adds to element by element. The output is byte for byte the dump of the whole document.
#pragma once

#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace storemove::stream {

class JsonArrayOut;
// Each placeholder's name and the writer of its array; writers run in the document's order.
using JsonArrays = std::vector<std::pair<std::string, std::function<void(JsonArrayOut&)>>>;

// The string value that stands for the array `name` in a template (with a random word of the
// process, so no other text of the document spells it).
std::string JsonArrayPlaceholder(const std::string& name);

// `doc` at `indent` (its first line not indented: it follows a key or the array's own indent).
// kInvalidArgument, before anything is written, unless each of `arrays` is in `doc` once.
void WriteJsonTemplate(std::FILE* out, const nlohmann::json& doc, const std::string& indent, const JsonArrays& arrays);

class JsonArrayOut {
 public:
  JsonArrayOut(std::FILE* out, std::string indent) : out_(out), indent_(std::move(indent)) {}
  void Add(const nlohmann::json& element);
  // An element that holds streamed arrays of its own.
  void AddTemplate(const nlohmann::json& element, const JsonArrays& arrays);
  void End();  // "]", or "[]" when nothing was added

 private:
  void Next();  // "[" or "," before an element, its line and indent
  std::FILE* out_;
  std::string indent_;  // the array's; its elements are two spaces in
  bool any_ = false;
};

}  // namespace storemove::stream
