// Where an object store's S3 credentials come from, as the AWS SDKs find them, when asked
// (`credentialChain: true`): the environment's keys, a profile of the shared files (keys, a web
// identity, a credential process), a web identity token file, a container credentials endpoint,
// and the instance metadata service only when that too is asked for. And a provider function,
// whose credentials are set in the native client and set again before they expire.
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { BindingCredentials, BindingObjectOptions } from './binding'
import { argumentError, UffdError } from './errors'
import { binding } from './loader'

/** S3 credentials given explicitly (else `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`). */
export interface ObjectStoreCredentials {
  /** The access key id (`AWS_ACCESS_KEY_ID`). */
  accessKeyId: string
  /** The secret access key (`AWS_SECRET_ACCESS_KEY`). */
  secretAccessKey: string
  /** A session token, for temporary credentials (`AWS_SESSION_TOKEN`). */
  sessionToken?: string
}

/** What a credentials provider function gives: keys, and when they expire (then it is asked again before). */
export interface ProvidedCredentials extends ObjectStoreCredentials {
  /** When they stop working: the provider is asked again before (none: never asked again). */
  expiration?: Date
}

/**
 * A function that gives credentials, asked once when the source is made and again before they
 * expire (five minutes before, or half their life if shorter): `fromNodeProviderChain()` of
 * `@aws-sdk/credential-providers`, say.
 */
export type CredentialProvider = () => Promise<ProvidedCredentials> | ProvidedCredentials

/** The credential fields of the native options. */
export type CredentialFields = Pick<
  BindingObjectOptions,
  | 'accessKeyId'
  | 'secretAccessKey'
  | 'sessionToken'
  | 'webIdentityTokenFile'
  | 'roleArn'
  | 'roleSessionName'
  | 'stsEndpoint'
  | 'containerCredentialsUri'
  | 'containerAuthorizationToken'
  | 'containerAuthorizationTokenFile'
  | 'instanceMetadataEndpoint'
>

/** What to look for: the options that say where credentials come from. */
export interface CredentialOptions {
  credentials?: ObjectStoreCredentials | CredentialProvider
  credentialChain?: boolean
  profile?: string
  instanceMetadata?: boolean
}

type Env = Record<string, string | undefined>

/**
 * The credential fields for an `s3://` object, and the provider function to run if that is where
 * they come from. Keys given win; then, by default, `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`;
 * with `credentialChain`, the rest of the chain.
 */
export function credentialsOf(options: CredentialOptions, env: Env): { fields: CredentialFields; provider?: CredentialProvider } {
  const given = options.credentials
  if (typeof given === 'function') return { fields: {}, provider: given }
  if (given !== undefined) return { fields: keysOf(given, 'options.credentials') }
  if (env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) {
    return {
      fields: {
        accessKeyId: env.AWS_ACCESS_KEY_ID,
        secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
        sessionToken: env.AWS_SESSION_TOKEN || undefined,
      },
    }
  }
  if (options.credentialChain !== true) return { fields: {} }
  return chain(options, env)
}

function keysOf(given: ObjectStoreCredentials, name: string): CredentialFields {
  if (typeof given !== 'object' || given === null) throw argumentError(name, 'an object or a function', given)
  for (const key of ['accessKeyId', 'secretAccessKey'] as const) {
    if (typeof given[key] !== 'string' || given[key] === '') throw argumentError(`${name}.${key}`, 'a non-empty string', given[key])
  }
  if (given.sessionToken !== undefined && typeof given.sessionToken !== 'string')
    throw argumentError(`${name}.sessionToken`, 'a string', given.sessionToken)
  return { accessKeyId: given.accessKeyId, secretAccessKey: given.secretAccessKey, sessionToken: given.sessionToken || undefined }
}

/** The chain after the environment's keys, in the AWS SDKs' order. */
function chain(options: CredentialOptions, env: Env): { fields: CredentialFields; provider?: CredentialProvider } {
  const named = options.profile ?? env.AWS_PROFILE
  const profile = profileOf(named ?? 'default', env)
  if (named !== undefined && profile === undefined) {
    throw new UffdError(`the profile ${JSON.stringify(named)} is in neither ${credentialsFile(env)} nor ${configFile(env)}`, {
      code: 'ENOENT',
    })
  }
  if (profile) {
    const found = fromProfile(named ?? 'default', profile)
    if (found) return found
  }
  if (env.AWS_WEB_IDENTITY_TOKEN_FILE && env.AWS_ROLE_ARN) {
    return webIdentity(env.AWS_WEB_IDENTITY_TOKEN_FILE, env.AWS_ROLE_ARN, env.AWS_ROLE_SESSION_NAME, env.AWS_ENDPOINT_URL_STS)
  }
  const containerUri =
    env.AWS_CONTAINER_CREDENTIALS_FULL_URI ??
    (env.AWS_CONTAINER_CREDENTIALS_RELATIVE_URI ? `http://169.254.170.2${env.AWS_CONTAINER_CREDENTIALS_RELATIVE_URI}` : undefined)
  if (containerUri) {
    return {
      fields: {
        containerCredentialsUri: containerUri,
        containerAuthorizationToken: env.AWS_CONTAINER_AUTHORIZATION_TOKEN,
        containerAuthorizationTokenFile: env.AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE,
      },
    }
  }
  if (options.instanceMetadata === true && env.AWS_EC2_METADATA_DISABLED !== 'true') {
    return { fields: { instanceMetadataEndpoint: env.AWS_EC2_METADATA_SERVICE_ENDPOINT ?? 'http://169.254.169.254' } }
  }
  return { fields: {} }
}

/** A web identity: the token's file exchanged at STS for the role's credentials. */
function webIdentity(tokenFile: string, roleArn: string, sessionName: string | undefined, sts: string | undefined) {
  return { fields: { webIdentityTokenFile: tokenFile, roleArn, roleSessionName: sessionName, stsEndpoint: sts } }
}

const credentialsFile = (env: Env) => env.AWS_SHARED_CREDENTIALS_FILE ?? join(homedir(), '.aws', 'credentials')
const configFile = (env: Env) => env.AWS_CONFIG_FILE ?? join(homedir(), '.aws', 'config')

/** The profile's settings: the credentials file's section, over the config file's (`[profile NAME]`). */
function profileOf(name: string, env: Env): Record<string, string> | undefined {
  const fromCredentials = iniSections(credentialsFile(env)).get(name)
  const fromConfig = iniSections(configFile(env)).get(name === 'default' ? 'default' : `profile ${name}`)
  if (!fromCredentials && !fromConfig) return undefined
  return { ...fromConfig, ...fromCredentials }
}

/** The sections of an INI file (none if there is no file). */
function iniSections(path: string): Map<string, Record<string, string>> {
  const sections = new Map<string, Record<string, string>>()
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch {
    return sections
  }
  let current: Record<string, string> | undefined
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/^\s+|\s+$/g, '')
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    const section = /^\[(.+)\]$/.exec(line)
    if (section) {
      const name = (section[1] ?? '').trim()
      current = sections.get(name) ?? {}
      sections.set(name, current)
      continue
    }
    const at = line.indexOf('=')
    if (current && at > 0) current[line.slice(0, at).trim().toLowerCase()] = line.slice(at + 1).trim()
  }
  return sections
}

/** What a profile gives: keys, a web identity, or a credential process. */
function fromProfile(
  name: string,
  profile: Record<string, string>,
): { fields: CredentialFields; provider?: CredentialProvider } | undefined {
  const keyId = profile.aws_access_key_id
  const secret = profile.aws_secret_access_key
  if (keyId && secret) return { fields: { accessKeyId: keyId, secretAccessKey: secret, sessionToken: profile.aws_session_token } }
  if (profile.web_identity_token_file && profile.role_arn) {
    return webIdentity(profile.web_identity_token_file, profile.role_arn, profile.role_session_name, undefined)
  }
  if (profile.credential_process) return { fields: {}, provider: processProvider(name, profile.credential_process) }
  if (profile.role_arn || profile.sso_session || profile.sso_start_url) {
    throw new UffdError(
      `the profile ${JSON.stringify(name)} assumes a role or signs in with SSO, which this package does not do itself: pass options.credentials a provider function (fromIni() of @aws-sdk/credential-providers)`,
      { code: 'EOPNOTSUPP' },
    )
  }
  return undefined
}

/** A profile's `credential_process`: run, its JSON answer read (Version 1), as the AWS CLI does. */
function processProvider(profile: string, command: string): CredentialProvider {
  return async () => {
    const { stdout } = await promisify(execFile)('/bin/sh', ['-c', command], { timeout: 60_000 }).catch((error: Error) => {
      throw new UffdError(`the credential_process of the profile ${JSON.stringify(profile)} failed: ${error.message}`, {
        code: 'EIO',
        cause: error,
      })
    })
    let answer: { AccessKeyId?: string; SecretAccessKey?: string; SessionToken?: string; Expiration?: string }
    try {
      answer = JSON.parse(stdout)
    } catch (error) {
      throw new UffdError(`the credential_process of the profile ${JSON.stringify(profile)} did not print JSON`, {
        code: 'EPROTO',
        cause: error,
      })
    }
    if (!answer.AccessKeyId || !answer.SecretAccessKey) {
      throw new UffdError(`the credential_process of the profile ${JSON.stringify(profile)} gave no AccessKeyId and SecretAccessKey`, {
        code: 'EPROTO',
      })
    }
    return {
      accessKeyId: answer.AccessKeyId,
      secretAccessKey: answer.SecretAccessKey,
      sessionToken: answer.SessionToken,
      expiration: answer.Expiration ? new Date(answer.Expiration) : undefined,
    }
  }
}

/**
 * Credentials from a provider function, in the native client: asked now, and again before they
 * expire for as long as `holder()` is there (a failed refresh is tried again a minute later, and
 * said as a warning: the credentials held go on until they expire).
 */
export async function provided(provider: CredentialProvider): Promise<{ binding: BindingCredentials; keep(holder: object): void }> {
  const credentials = new binding.BindingCredentials()
  const first = await ask(provider)
  credentials.set(first.accessKeyId, first.secretAccessKey, first.sessionToken)
  const keep = (holder: object) => {
    const weak = new WeakRef(holder)
    const schedule = (expiration: Date | undefined, retry = false) => {
      if (!expiration && !retry) return
      const left = expiration ? expiration.getTime() - Date.now() : 0
      const delay = retry ? 60_000 : Math.max(1000, left - Math.min(5 * 60_000, left / 2))
      const timer = setTimeout(async () => {
        if (weak.deref() === undefined) return
        try {
          const next = await ask(provider)
          credentials.set(next.accessKeyId, next.secretAccessKey, next.sessionToken)
          schedule(next.expiration)
        } catch (error) {
          process.emitWarning(`userfaultfd: refreshing the object store's credentials failed: ${(error as Error).message}`)
          schedule(expiration, true)
        }
      }, delay)
      timer.unref()
    }
    schedule(first.expiration)
  }
  return { binding: credentials, keep }
}

async function ask(provider: CredentialProvider): Promise<ProvidedCredentials> {
  const answer = await provider()
  const fields = keysOf(answer, 'the credentials the provider gave')
  const expiration = answer.expiration
  if (expiration !== undefined && !(expiration instanceof Date && Number.isFinite(expiration.getTime()))) {
    throw argumentError('the credentials the provider gave: expiration', 'a Date', expiration)
  }
  return {
    accessKeyId: fields.accessKeyId ?? '',
    secretAccessKey: fields.secretAccessKey ?? '',
    sessionToken: fields.sessionToken,
    expiration,
  }
}
