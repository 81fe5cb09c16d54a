// The version of storemove: CMake's project(VERSION) (util/version.cc.in, configured at build time).
// Every JSON report carries it as "storemove_version", so a report can be traced to its tool.
#pragma once

namespace storemove {

// "0.1.0": the release, from project() in the top CMakeLists.txt.
const char* Version();

}  // namespace storemove
