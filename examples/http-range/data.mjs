// The served data: word k (bytes 4k..4k+3) is a hash of k and the seed, so every word differs and a
// chunk fetched for the wrong range cannot pass the check.

export function wordAt(k, seed) {
  let x = Math.imul((k + Math.imul(seed, 0x27d4eb2f)) | 0, 0x9e3779b1)
  x ^= x >>> 16
  x = Math.imul(x, 0x21f0aaad)
  x ^= x >>> 15
  return x >>> 0
}

/** A SharedArrayBuffer of `size` bytes (a multiple of 4) holding the data set. */
export function generate(size, seed) {
  const shared = new SharedArrayBuffer(size)
  const words = new Uint32Array(shared)
  for (let k = 0; k < words.length; k++) words[k] = wordAt(k, seed)
  return shared
}
