// Shared by the examples: a command-line integer, or exit 2 with a message that says what is wrong.
export function integerFlag(name, text, min) {
  const value = Number(text)
  if (String(text).trim() === '' || !Number.isSafeInteger(value) || value < min) {
    console.error(`--${name} must be an integer >= ${min}, not ${JSON.stringify(text)}`)
    process.exit(2)
  }
  return value
}
