// Under Bun too, a malformed object-store endpoint is an error that names it, never an abort.
import { expect, test } from 'bun:test'
import { Source, UffdError } from 'userfaultfd'

for (const endpoint of ['127.0.0.1:8333', 'localhost:8333', '', 'http://']) {
  test(`endpoint ${JSON.stringify(endpoint)} is refused by name`, async () => {
    const error = await Source.objectStore('s3://bucket/key', {
      endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'a', secretAccessKey: 'b' },
    }).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(UffdError)
    expect((error as UffdError).code).toBe('EINVAL')
    expect((error as UffdError).message).toContain(`endpoint ${JSON.stringify(endpoint)}`)
  })
}
