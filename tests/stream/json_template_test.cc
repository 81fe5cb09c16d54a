// stream/json_template.h: a document written with its arrays streamed is byte for byte nlohmann's
// dump(2) of the whole document, nested, empty and escaped arrays included.
#include "stream/json_template.h"

#include <gtest/gtest.h>
#include <stdio.h>

#include <string>

#include "util/error.h"

namespace storemove::stream {
namespace {

std::string Written(const std::function<void(std::FILE*)>& write) {
  char* text = nullptr;
  size_t size = 0;
  std::FILE* out = ::open_memstream(&text, &size);
  try {
    write(out);
  } catch (...) {
    std::fclose(out);
    std::free(text);
    throw;
  }
  std::fclose(out);
  std::string result(text, size);
  std::free(text);
  return result;
}

std::string Dump(const nlohmann::json& j) { return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace); }

TEST(JsonTemplate, StreamedArraysGiveTheWholeDocumentsDump) {
  // Names with quotes, a control character and a byte that is not UTF-8 (dumped as U+FFFD).
  const std::vector<std::string> names = {"ann", "b\"o\\b", std::string("c\x01") + "d", "e\xff"};
  const nlohmann::json whole = {
      {"groups",
       {{{"name", "g1"}, {"members", names}, {"also", nlohmann::json::array()}, {"n", 3}},
        {{"name", "g2"}, {"members", {"x"}}, {"also", {"y", "z"}}, {"n", nullptr}}}},
      {"empty", nlohmann::json::array()},
      {"tail", names},
      {"version", "1.0"}};
  const std::string written = Written([&](std::FILE* out) {
    const nlohmann::json doc = {{"groups", JsonArrayPlaceholder("groups")},
                                {"empty", JsonArrayPlaceholder("empty")},
                                {"tail", JsonArrayPlaceholder("tail")},
                                {"version", "1.0"}};
    auto each = [](const nlohmann::json& list) {
      return [list](JsonArrayOut& array) {
        for (const auto& e : list) array.Add(e);
      };
    };
    WriteJsonTemplate(
        out, doc, "",
        {{"groups",
          [&](JsonArrayOut& array) {
            for (const auto& g : whole["groups"])
              array.AddTemplate({{"name", g["name"]},
                                 {"members", JsonArrayPlaceholder("members")},
                                 {"also", JsonArrayPlaceholder("also")},
                                 {"n", g["n"]}},
                                {{"members", each(g["members"])}, {"also", each(g["also"])}});
          }},
         {"empty", [](JsonArrayOut&) {}},
         {"tail", each(whole["tail"])}});
  });
  EXPECT_EQ(written, Dump(whole));
  EXPECT_EQ(nlohmann::json::parse(written)["tail"][3], "e\xef\xbf\xbd");
}

TEST(JsonTemplate, AnObjectElementIsIndentedAsInTheDump) {
  const nlohmann::json whole = {{"rows", {{{"a", 1}, {"b", {1, 2}}}, {{"a", 2}, {"b", nlohmann::json::array()}}}}};
  const std::string written = Written([&](std::FILE* out) {
    WriteJsonTemplate(out, {{"rows", JsonArrayPlaceholder("rows")}}, "", {{"rows", [&](JsonArrayOut& array) {
                                                                              for (const auto& row : whole["rows"])
                                                                                array.Add(row);
                                                                            }}});
  });
  EXPECT_EQ(written, Dump(whole));
}

// A value of the document that spells a placeholder's old, fixed form (a group's regular
// expression can hold any bytes; helper-165) stays a string: the placeholders carry a random word.
TEST(JsonTemplate, TextOfTheDocumentCannotSpellAPlaceholder) {
  const std::string spelled = std::string("a\"\x01storemove-array:users\x01");
  const nlohmann::json whole = {{"regex", spelled}, {"users", {"u1", "u2"}}};
  const std::string written = Written([&](std::FILE* out) {
    WriteJsonTemplate(out, {{"regex", spelled}, {"users", JsonArrayPlaceholder("users")}}, "",
                      {{"users", [](JsonArrayOut& array) {
                          array.Add("u1");
                          array.Add("u2");
                        }}});
  });
  EXPECT_EQ(written, Dump(whole));
}

TEST(JsonTemplate, AnArrayNotInTheDocumentOnceIsRefusedBeforeAnythingIsWritten) {
  auto none = [](JsonArrayOut&) {};
  const nlohmann::json twice = {{"a", JsonArrayPlaceholder("x")}, {"b", JsonArrayPlaceholder("x")}};
  for (const nlohmann::json& doc : {nlohmann::json{{"a", 1}}, twice}) {
    std::string written = "not called";
    EXPECT_THROW(written = Written([&](std::FILE* out) { WriteJsonTemplate(out, doc, "", {{"x", none}}); }), Error);
    EXPECT_EQ(written, "not called");
  }
}

}  // namespace
}  // namespace storemove::stream
