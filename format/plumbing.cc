// ByteSink/ByteSource and their in-memory implementations.
#include <algorithm>
#include <cstring>

#include "format/format.h"

namespace storemove::format {

ByteSink::~ByteSink() = default;
ByteSource::~ByteSource() = default;

void StringSink::Write(const void* data, size_t size) { data_.append(static_cast<const char*>(data), size); }

size_t StringSource::Read(void* data, size_t size) {
  size_t n = std::min(size, data_.size());
  if (n == 0) return 0;  // memcpy from an empty view's null pointer is undefined
  std::memcpy(data, data_.data(), n);
  data_.remove_prefix(n);
  return n;
}

}  // namespace storemove::format
