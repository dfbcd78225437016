// The demo's data set: a pure function of (offset, seed), so the pager can make any part of it on
// demand and the reader can check every word it reads without keeping a copy.

/**
 * The 32-bit word at word index `index` (byte offset / 4): the index, offset by the seed, through
 * a cheap integer hash (xorshift-multiply, "lowbias32"). Each step is a bijection, so every word of
 * the region differs and a page mapped at the wrong offset cannot pass the check.
 */
export function wordAt(index, seed) {
  let x = (index + Math.imul(seed, 0x9e3779b9)) | 0
  x ^= x >>> 16
  x = Math.imul(x, 0x7feb352d)
  x ^= x >>> 15
  x = Math.imul(x, 0x846ca68b)
  x ^= x >>> 16
  return x >>> 0
}

/** Fills `words` with the data set from byte offset `offset` (a multiple of 4) on. */
export function fill(words, offset, seed) {
  const first = offset / 4
  for (let i = 0; i < words.length; i++) words[i] = wordAt(first + i, seed)
}
