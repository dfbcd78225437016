// Credentials other than keys, against a SeaweedFS that checks signatures (wrongly signed reads
// are refused): a provider function (asked again before expiry), a profile of the
// shared files (keys, a credential_process), a web identity exchanged at a stand-in STS, a stand-in
// container credentials endpoint. The stand-ins answer what the real services answer, on loopback;
// nothing asks any other address (the instance metadata service is never asked unless told).
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { type ObjectStoreSourceOptions, Region, Source, Userfaultfd } from 'userfaultfd'
import { PAGE } from './helpers/object-data'
import { type Identity, Seaweed } from './helpers/seaweed'
import { seaweedTests } from './helpers/seaweed-tests'

process.env.AWS_EC2_METADATA_DISABLED = 'true'
for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_ENDPOINT_URL', 'AWS_PROFILE'])
  delete process.env[name]

const identity: Identity = { accessKey: 'AKIDCHAINTEST', secretKey: 'chain-test-secret' }
const dir = mkdtempSync(join(tmpdir(), 'uffd-credentials-'))
const { weedPath, run } = seaweedTests('credentials')
const bytes = new Uint8Array(2 * PAGE).map((_, i) => (i * 7) & 0xff)
let weed: Seaweed | undefined
const servers: Server[] = []

test.before(async () => {
  if (!weedPath) return
  weed = await Seaweed.server({ identity })
  await weed.bucket('creds')
  await weed.put('creds', 'object.bin', bytes)
})

test.after.always(async () => {
  for (const server of servers) server.close()
  await weed?.stop()
  rmSync(dir, { recursive: true, force: true })
})

function endpoint(): string {
  if (!weed) throw new Error('SeaweedFS is not running')
  return weed.s3
}

/** The object read through a source made with `options` (every byte checked), or the error. */
async function read(options: ObjectStoreSourceOptions): Promise<true | Error> {
  try {
    const source = await Source.objectStore('s3://creds/object.bin', { endpoint: endpoint(), ...options })
    const uffd = new Userfaultfd()
    const region = Region.anonymous(bytes.length)
    uffd.register(region, { source })
    const same = Buffer.from(region.buffer).equals(Buffer.from(bytes))
    uffd.close()
    region.close()
    return same || new Error('wrong bytes')
  } catch (error) {
    return error as Error
  }
}

/** A stand-in HTTP service on loopback: `answer` gets each request; its requests are kept. */
async function standIn(answer: (request: IncomingMessage, body: string) => { status?: number; type?: string; body: string }) {
  const requests: { request: IncomingMessage; body: string }[] = []
  const server = createServer((request, response) => {
    let body = ''
    request.on('data', (chunk) => {
      body += chunk
    })
    request.on('end', () => {
      requests.push({ request, body })
      const { status = 200, type = 'application/json', body: out } = answer(request, body)
      response.writeHead(status, { 'content-type': type }).end(out)
    })
  })
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests }
}

run('a wrongly signed read is refused here: the store checks the signatures the tests send', async (t) => {
  const wrong = await read({ credentials: { accessKeyId: identity.accessKey, secretAccessKey: 'not it' }, env: {} })
  t.is((wrong as Error & { code?: string }).code, 'EACCES')
})

run('a provider function gives the keys, and is asked again before they expire', async (t) => {
  let asked = 0
  const provider = async () => {
    asked++
    return { accessKeyId: identity.accessKey, secretAccessKey: identity.secretKey, expiration: new Date(Date.now() + 2500) }
  }
  t.is(await read({ credentials: provider, env: {} }), true)
  const source = await Source.objectStore('s3://creds/object.bin', { endpoint: endpoint(), credentials: provider, env: {} })
  const before = asked
  await new Promise((resolve) => setTimeout(resolve, 2500))
  t.true(asked > before, `asked ${asked} times`)
  t.is(source.size, bytes.length)
  const bad = await read({ credentials: async () => ({ accessKeyId: '', secretAccessKey: 'x' }), env: {} })
  t.regex((bad as Error).message, /accessKeyId/)
})

run('credentialChain: a profile of the shared credentials file, named by AWS_PROFILE; one that is missing is an error', async (t) => {
  const file = join(dir, 'credentials')
  writeFileSync(
    file,
    `[default]\naws_access_key_id = NOTTHIS\naws_secret_access_key = x\n\n[test]\naws_access_key_id = ${identity.accessKey}\naws_secret_access_key = ${identity.secretKey}\n`,
  )
  const env = { AWS_SHARED_CREDENTIALS_FILE: file, AWS_CONFIG_FILE: join(dir, 'none'), AWS_PROFILE: 'test' }
  t.is(await read({ credentialChain: true, env }), true)
  t.is(await read({ credentialChain: true, profile: 'test', env: { ...env, AWS_PROFILE: undefined } }), true)
  // Not asked for, the chain is not looked at.
  t.regex(((await read({ env })) as Error).message, /no credentials/)
  const missing = await read({ credentialChain: true, env: { ...env, AWS_PROFILE: 'gone' } })
  t.regex((missing as Error).message, /profile "gone"/)
})

run('credentialChain: a profile with a credential_process (the config file), run and its JSON read', async (t) => {
  const script = join(dir, 'process.sh')
  writeFileSync(script, `#!/bin/sh\necho '{"Version":1,"AccessKeyId":"${identity.accessKey}","SecretAccessKey":"${identity.secretKey}"}'\n`)
  chmodSync(script, 0o755)
  const config = join(dir, 'config')
  writeFileSync(config, `[profile proc]\ncredential_process = ${script}\n`)
  const env = { AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'), AWS_CONFIG_FILE: config, AWS_PROFILE: 'proc' }
  t.is(await read({ credentialChain: true, env }), true)
})

run('credentialChain: a web identity token exchanged at STS (a stand-in on loopback) for the keys', async (t) => {
  // STS takes its parameters in the query string (the SDKs may send them as a form: either).
  const paramsOf = (request: IncomingMessage, body: string) => new URLSearchParams(body || request.url?.split('?')[1] || '')
  const sts = await standIn((request, body) => {
    const params = paramsOf(request, body)
    const ok = params.get('Action') === 'AssumeRoleWithWebIdentity' && params.get('WebIdentityToken')?.trim() === 'the-token'
    return ok
      ? {
          type: 'text/xml',
          body: `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>${identity.accessKey}</AccessKeyId><SecretAccessKey>${identity.secretKey}</SecretAccessKey><SessionToken></SessionToken><Expiration>${new Date(Date.now() + 3600_000).toISOString()}</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>`,
        }
      : { status: 400, type: 'text/xml', body: '<ErrorResponse><Error><Code>InvalidIdentityToken</Code></Error></ErrorResponse>' }
  })
  const token = join(dir, 'token')
  writeFileSync(token, 'the-token\n')
  const env = {
    AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'),
    AWS_CONFIG_FILE: join(dir, 'none'),
    AWS_WEB_IDENTITY_TOKEN_FILE: token,
    AWS_ROLE_ARN: 'arn:aws:iam::123456789012:role/reader',
    AWS_ROLE_SESSION_NAME: 'uffd-test',
    AWS_ENDPOINT_URL_STS: sts.url,
  }
  const result = await read({ credentialChain: true, env })
  t.is(result, true, String(result))
  const first = sts.requests[0]
  const params = first ? paramsOf(first.request, first.body) : new URLSearchParams()
  t.is(params.get('RoleArn'), 'arn:aws:iam::123456789012:role/reader')
  t.is(params.get('RoleSessionName'), 'uffd-test')
})

run('credentialChain: a container credentials endpoint (a stand-in on loopback) with its authorization token', async (t) => {
  const container = await standIn((request) =>
    request.headers.authorization === 'container-token'
      ? {
          body: JSON.stringify({
            AccessKeyId: identity.accessKey,
            SecretAccessKey: identity.secretKey,
            Token: '',
            Expiration: new Date(Date.now() + 3600_000).toISOString(),
          }),
        }
      : { status: 401, body: '{"message":"no token"}' },
  )
  const tokenFile = join(dir, 'container-token')
  writeFileSync(tokenFile, 'container-token\n')
  const base = { AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'), AWS_CONFIG_FILE: join(dir, 'none') }
  const full = `${container.url}/v2/credentials`
  t.is(
    await read({
      credentialChain: true,
      env: { ...base, AWS_CONTAINER_CREDENTIALS_FULL_URI: full, AWS_CONTAINER_AUTHORIZATION_TOKEN: 'container-token' },
    }),
    true,
  )
  t.is(
    await read({
      credentialChain: true,
      env: { ...base, AWS_CONTAINER_CREDENTIALS_FULL_URI: full, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: tokenFile },
    }),
    true,
  )
  const refused = await read({ credentialChain: true, env: { ...base, AWS_CONTAINER_CREDENTIALS_FULL_URI: full } })
  t.regex((refused as Error).message, /HTTP 401/)
  t.true(container.requests.every(({ request }) => request.url === '/v2/credentials'))
})
