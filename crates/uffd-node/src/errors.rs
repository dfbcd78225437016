//! Core errors become JavaScript errors with Node's fields (`code`, `errno`, `syscall`) once, here:
//! thrown, or as a `BindingFailure` value where a Promise resolves with the outcome. The TypeScript
//! layer turns them into `UffdError` instances. Their messages give the core's advice in
//! JavaScript's terms (`JavaScript`): the options and methods a JavaScript caller has.

use napi::{Env, Status};
use napi_derive::napi;
use uffd_core::error::{Advice, Dialect};
use uffd_core::Error;

/// The core's advice said with the names JavaScript callers use.
pub struct JavaScript;

impl Dialect for JavaScript {
    fn advice<'a>(&self, advice: &'a Advice) -> &'a str {
        match advice {
            Advice::Text(text) => text,
            Advice::Permission => {
                "userfaultfd is not permitted: run as root, give this user read-write access to \
                 /dev/userfaultfd, set sysctl vm.unprivileged_userfaultfd=1, grant CAP_SYS_PTRACE, or \
                 pass userModeOnly: true (a container's seccomp profile may also block the syscall)"
            }
            Advice::ProbeFeatures => {
                "the kernel refused the feature set: ask Userfaultfd.probe() which features it offers"
            }
            Advice::ReadInParts => "read the region in parts with region.bytes(offset, length)",
            Advice::S3Credentials => {
                "pass options.credentials ({ accessKeyId, secretAccessKey }, or a provider function), set \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, pass credentialChain: true to look for them as \
                 the AWS SDKs do, or pass anonymous: true for a public bucket (instance metadata is never \
                 asked unless instanceMetadata says so)"
            }
            Advice::AzureAccount => "pass options.account (or set AZURE_STORAGE_ACCOUNT_NAME)",
            Advice::AzureCredentials => {
                "pass options.accountKey or options.sasToken (or set AZURE_STORAGE_ACCOUNT_KEY or \
                 AZURE_STORAGE_SAS_TOKEN), or anonymous: true for a public container (no managed identity is \
                 ever asked)"
            }
            Advice::Endpoint => {
                "give a URL such as http://127.0.0.1:8333 (options.endpoint; from the environment, \
                 AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for s3://, AZURE_STORAGE_ENDPOINT for az://)"
            }
            Advice::WaitForHandler => ": it waits for a handler until timeoutMs, then gets the fallback",
            Advice::InstallHandler => {
                ". Call uffd.handle(fn) (serves other threads) or await uffd.handleInWorker(module) (serves this \
                 thread too) before touching registered memory, or register the range with a source"
            }
            Advice::HandleOnAnotherThread => {
                ". Serve this thread's faults with handleInWorker(), or touch the memory from another thread"
            }
            Advice::InstallHandlerSooner => ". Call uffd.handle(fn) or uffd.serve(region, { source }) sooner",
        }
    }

    fn buffer(&self) -> &'static str {
        "ArrayBuffer"
    }
}

/// The core's advice said with the flags of the package's command line (`userfaultfd firecracker`,
/// `userfaultfd snapshot push`); the rest as JavaScript says it.
pub struct CommandLine;

impl Dialect for CommandLine {
    fn advice<'a>(&self, advice: &'a Advice) -> &'a str {
        match advice {
            Advice::S3Credentials => {
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, pass --credential-chain to look for them as the \
                 AWS SDKs do, or pass --anonymous for a public bucket (instance metadata is never asked)"
            }
            Advice::AzureAccount => "pass --account NAME (or set AZURE_STORAGE_ACCOUNT_NAME)",
            Advice::AzureCredentials => {
                "set AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN, or pass --anonymous for a public \
                 container (no managed identity is ever asked)"
            }
            Advice::Endpoint => {
                "give a URL such as http://127.0.0.1:8333 (--endpoint; from the environment, AWS_ENDPOINT_URL_S3 \
                 or AWS_ENDPOINT_URL for s3://, AZURE_STORAGE_ENDPOINT for az://)"
            }
            other => JavaScript.advice(other),
        }
    }

    fn buffer(&self) -> &'static str {
        JavaScript.buffer()
    }
}

/// What a JavaScript caller reads of `error`.
pub fn message(error: &Error) -> String {
    error.message(&JavaScript)
}

/// What a user of the command line reads of `error`, where it differs from `message`.
pub fn command_line_message(error: &Error) -> Option<String> {
    let said = error.message(&CommandLine);
    (said != message(error)).then_some(said)
}

/// Throws `error` as a JavaScript Error carrying code, errno and syscall, and returns the marker
/// that tells napi-rs the exception is already pending.
pub fn throw(env: &Env, error: &Error) -> napi::Error {
    // A number out of its bounds is Node's RangeError ERR_OUT_OF_RANGE, as the TypeScript in
    // front throws it for the bounds it checks itself.
    if let Error::OutOfRange { .. } = error {
        return match env.throw_range_error(&message(error), Some(error.code())) {
            Ok(()) => napi::Error::new(Status::PendingException, String::new()),
            Err(fallback) => fallback,
        };
    }
    let thrown = (|| -> napi::Result<()> {
        let mut object = env.create_error(napi::Error::new(Status::GenericFailure, message(error)))?;
        object.set("code", error.code())?;
        object.set("errno", -(error.errno() as i32))?;
        object.set("syscall", error.op())?;
        object.set("uffd", true)?;
        if let Some(status) = error.status() {
            object.set("status", status as u32)?;
        }
        if let Some(said) = command_line_message(error) {
            object.set("commandLineMessage", said)?;
        }
        env.throw(object)
    })();
    match thrown {
        Ok(()) => napi::Error::new(Status::PendingException, String::new()),
        Err(fallback) => fallback,
    }
}

/// A core error from an I/O error of a system call the binding makes itself.
pub fn sys_error(op: &'static str, error: std::io::Error, what: &str) -> Error {
    match error.try_into() {
        Ok(errno) => Error::sys(op, errno, what.to_string()),
        Err(error) => Error::invalid(op, format!("{what}: {error}")),
    }
}

pub fn invalid(env: &Env, op: &'static str, detail: String) -> napi::Error {
    throw(env, &Error::invalid(op, detail))
}

/// Maps a core result, throwing its error the Node way.
pub trait OrThrow<T> {
    fn or_throw(self, env: &Env) -> napi::Result<T>;
}

impl<T> OrThrow<T> for uffd_core::Result<T> {
    fn or_throw(self, env: &Env) -> napi::Result<T> {
        self.map_err(|error| throw(env, &error))
    }
}

/// Why an operation that resolves a Promise failed (a handshake, a prefetch, opening an object
/// source): Node's error fields, for the TypeScript to make its error from.
#[napi(object, object_from_js = false)]
pub struct BindingFailure {
    pub code: &'static str,
    pub errno: i32,
    pub syscall: &'static str,
    pub message: String,
    /// For a refused handshake: the pid of the process that sent it (SO_PEERCRED).
    pub peer_pid: Option<i32>,
    /// The HTTP status of a remote store's answer, if that is what failed.
    pub status: Option<u32>,
    /// The message with the command line's flags for its advice, where that differs.
    pub command_line_message: Option<String>,
}

impl BindingFailure {
    /// What an operation stopped by its caller's signal resolves with (the caller has rejected
    /// with its own AbortError already, which carries the signal's reason).
    pub(crate) fn aborted(op: &'static str) -> Self {
        BindingFailure {
            code: "ABORT_ERR",
            errno: -libc::ECANCELED,
            syscall: op,
            message: "The operation was aborted".into(),
            peer_pid: None,
            status: None,
            command_line_message: None,
        }
    }

    pub(crate) fn of(error: &Error) -> Self {
        BindingFailure {
            code: error.code(),
            errno: -(error.errno() as i32),
            syscall: error.op(),
            message: message(error),
            peer_pid: None,
            status: error.status().map(u32::from),
            command_line_message: command_line_message(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uffd_core::error::Core;

    fn errno(raw: i32) -> std::io::Error {
        std::io::Error::from_raw_os_error(raw)
    }

    /// Each named advice, in JavaScript's terms, as the message read before the core named its
    /// own concepts: byte for byte.
    #[test]
    fn the_javascript_advice_reads_as_it_always_did() {
        let cases = [
            (
                Error::invalid("objectStore", "no credentials for s3://b/k").with_advice(Advice::S3Credentials),
                "objectStore: no credentials for s3://b/k: pass options.credentials ({ accessKeyId, secretAccessKey }, \
                 or a provider function), set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, pass credentialChain: true \
                 to look for them as the AWS SDKs do, or pass anonymous: true for a public bucket (instance metadata \
                 is never asked unless instanceMetadata says so)",
            ),
            (
                Error::invalid("objectStore", "no storage account for az://c/b").with_advice(Advice::AzureAccount),
                "objectStore: no storage account for az://c/b: pass options.account (or set AZURE_STORAGE_ACCOUNT_NAME)",
            ),
            (
                Error::invalid("objectStore", "no credentials for az://c/b").with_advice(Advice::AzureCredentials),
                "objectStore: no credentials for az://c/b: pass options.accountKey or options.sasToken (or set \
                 AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN), or anonymous: true for a public container \
                 (no managed identity is ever asked)",
            ),
            (
                Error::invalid("objectStore", "endpoint \"localhost:8333\" is not http:// or https://")
                    .with_advice(Advice::Endpoint),
                "objectStore: endpoint \"localhost:8333\" is not http:// or https://: give a URL such as \
                 http://127.0.0.1:8333 (options.endpoint; from the environment, AWS_ENDPOINT_URL_S3 or \
                 AWS_ENDPOINT_URL for s3://, AZURE_STORAGE_ENDPOINT for az://)",
            ),
            (
                Error::TooLarge { op: "bytes", len: 5_000_000_000, limit: 4_294_967_296 },
                "bytes: 5000000000 bytes are more than one ArrayBuffer holds (4294967296 bytes): read the region in \
                 parts with region.bytes(offset, length)",
            ),
            (
                sys_error("open", errno(libc::EPERM), "/dev/userfaultfd"),
                "open failed with EPERM: Operation not permitted: /dev/userfaultfd; userfaultfd is not permitted: \
                 run as root, give this user read-write access to /dev/userfaultfd, set sysctl \
                 vm.unprivileged_userfaultfd=1, grant CAP_SYS_PTRACE, or pass userModeOnly: true (a container's \
                 seccomp profile may also block the syscall)",
            ),
            (
                sys_error("UFFDIO_API", errno(libc::EINVAL), ""),
                "UFFDIO_API failed with EINVAL: Invalid argument: the kernel refused the feature set: ask \
                 Userfaultfd.probe() which features it offers",
            ),
            (
                sys_error("UFFDIO_COPY", errno(libc::EEXIST), "at 4096"),
                "UFFDIO_COPY failed with EEXIST: File exists: at 4096; the page is already mapped (another resolver won)",
            ),
            (
                sys_error("mmap", errno(libc::ENOMEM), "x").with_advice("reserve"),
                "mmap failed with ENOMEM: Out of memory: x; reserve",
            ),
        ];
        for (error, before) in cases {
            assert_eq!(message(&error), before);
        }
    }

    /// The core's own message names no JavaScript API: that is said here only.
    #[test]
    fn the_core_says_its_advice_without_javascript() {
        let error = Error::invalid("objectStore", "no credentials for s3://b/k").with_advice(Advice::S3Credentials);
        let core = error.message(&Core);
        assert_eq!(core, error.to_string());
        assert!(!core.contains("options.") && core.contains("StoreOptions::credentials"), "{core}");
    }

    /// The command line's users read its flags, not the library's options; other advice as
    /// JavaScript says it, and no second message where nothing differs.
    #[test]
    fn the_command_line_reads_its_own_flags() {
        let credentials =
            Error::invalid("objectStore", "no credentials for s3://b/k").with_advice(Advice::S3Credentials);
        let said = command_line_message(&credentials).expect("a message of its own");
        assert!(said.contains("--credential-chain") && said.contains("--anonymous"), "{said}");
        assert!(!said.contains("options.") && !said.contains("anonymous: true"), "{said}");
        let account =
            Error::invalid("objectStore", "no storage account for az://c/b").with_advice(Advice::AzureAccount);
        assert!(command_line_message(&account)
            .unwrap()
            .ends_with("pass --account NAME (or set AZURE_STORAGE_ACCOUNT_NAME)"));
        assert_eq!(command_line_message(&Error::invalid("map", "nothing to advise")), None);
    }
}
