//! Property tests of what the core accepts from outside: the Firecracker handshake's JSON, and the
//! offsets and lengths of every range operation. Each input either works or is refused with an
//! error, never a panic (debug builds panic on arithmetic overflow, so run these in both), and
//! nothing invalid is accepted: a reference model written from the rules says which inputs are valid.

use proptest::prelude::*;
use std::sync::Arc;
use uffd_core::handshake::{parse_ranges, HandshakeRange};
use uffd_core::region::base_page_size;
use uffd_core::{Error, Modes, Options, Protect, Region, RemoteRange, Resolution, Userfaultfd, Wake};

const CASES: u32 = 4096;
const PAGE: usize = 4096;
/// Pages of the regions the range properties run on.
const PAGES: usize = 16;
const SIZE: usize = PAGES * PAGE;

fn config() -> ProptestConfig {
    ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() }
}

/// Refused as a bad argument: misaligned or inconsistent (EINVAL), or out of its bounds (ERR_OUT_OF_RANGE).
fn is_invalid<T>(result: &Result<T, Error>) -> bool {
    matches!(result, Err(Error::Invalid { .. } | Error::OutOfRange { .. }))
}

// ---------------------------------------------------------------------------------------------
// The handshake

/// A JSON value for one field of a mapping, valid or not.
#[derive(Debug, Clone)]
enum Field {
    Absent,
    Null,
    Number(u64),
    Negative(i64),
    Float(f64),
    /// A decimal integer past u64::MAX.
    Huge(String),
    Text(String),
}

impl Field {
    fn json(&self) -> Option<String> {
        match self {
            Field::Absent => None,
            Field::Null => Some("null".into()),
            Field::Number(n) => Some(n.to_string()),
            Field::Negative(n) => Some(n.to_string()),
            Field::Float(f) => Some(format!("{f:?}")),
            Field::Huge(digits) => Some(digits.clone()),
            Field::Text(s) => Some(serde_json::to_string(s).unwrap()),
        }
    }
}

#[derive(Debug, Clone)]
struct Mapping {
    base: Field,
    size: Field,
    offset: Field,
    page_size: Field,
    page_size_kib: Field,
    /// An extra field, as a later Firecracker may send.
    unknown: bool,
}

impl Mapping {
    fn json(&self) -> String {
        let mut fields = Vec::new();
        let named = [
            ("base_host_virt_addr", &self.base),
            ("size", &self.size),
            ("offset", &self.offset),
            ("page_size", &self.page_size),
            ("page_size_kib", &self.page_size_kib),
        ];
        for (name, field) in named {
            if let Some(value) = field.json() {
                fields.push(format!("\"{name}\":{value}"));
            }
        }
        if self.unknown {
            fields.push("\"shared\":true".into());
            fields.push("\"later\":{\"slots\":[1,{\"kind\":null}],\"page_size\":\"not this one\"}".into());
        }
        format!("{{{}}}", fields.join(","))
    }
}

/// The reference model of a valid handshake, written from the rules rather than from the code:
/// the page size is `page_size` in bytes, else `page_size_kib` in bytes (as Firecracker 1.7 and
/// later send it, despite its name), else the base page size (Firecracker 1.0 to 1.6); fields
/// nobody knows are accepted and ignored.
fn model(mappings: &[Mapping]) -> Option<Vec<HandshakeRange>> {
    let required = |field: &Field| match field {
        Field::Number(n) => Some(*n),
        _ => None,
    };
    let optional = |field: &Field| match field {
        Field::Absent | Field::Null => Some(None),
        Field::Number(n) => Some(Some(*n)),
        _ => None,
    };
    if mappings.is_empty() {
        return None;
    }
    let mut ranges = Vec::new();
    for m in mappings {
        let (base, size, offset) = (required(&m.base)?, required(&m.size)?, required(&m.offset)?);
        // Both fields must be well-formed JSON numbers (or null) even when only one is used.
        let page_size = match (optional(&m.page_size)?, optional(&m.page_size_kib)?) {
            (Some(bytes), _) => u128::from(bytes),
            (None, Some(bytes)) => u128::from(bytes),
            (None, None) => base_page_size() as u128,
        };
        let (base, size, offset_end) = (u128::from(base), u128::from(size), u128::from(offset) + u128::from(size));
        let valid = page_size >= 4096
            && page_size.is_power_of_two()
            && page_size <= u128::from(u64::MAX)
            && size > 0
            && size % page_size == 0
            && base % page_size == 0
            && base != 0
            && base + size <= isize::MAX as u128
            && offset_end <= u128::from(u64::MAX);
        if !valid {
            return None;
        }
        ranges.push(HandshakeRange {
            range: RemoteRange { address: base as usize, length: size as usize, page_size: page_size as usize },
            offset,
        });
    }
    let mut sorted: Vec<_> = ranges.iter().map(|r| (r.range.address, r.range.length)).collect();
    sorted.sort();
    if sorted.windows(2).any(|pair| pair[0].0 + pair[0].1 > pair[1].0) {
        return None;
    }
    Some(ranges)
}

/// Numbers that are mostly plausible: small page multiples, with edges and junk mixed in.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (0u64..64).prop_map(|pages| pages * 4096),
        2 => (0u64..8).prop_map(|n| n << 21),
        1 => any::<u64>(),
        1 => 0u64..8192,
        1 => prop::sample::select(vec![
            0,
            1,
            u64::MAX,
            u64::MAX - 4095,
            isize::MAX as u64,
            (isize::MAX as u64) - 4095,
            1 << 47,
            1 << 63,
        ]),
    ]
}

fn field(valid: impl Strategy<Value = u64> + 'static) -> impl Strategy<Value = Field> {
    prop_oneof![
        24 => valid.prop_map(Field::Number),
        1 => Just(Field::Absent),
        1 => Just(Field::Null),
        1 => (i64::MIN..0).prop_map(Field::Negative),
        1 => prop::num::f64::ANY.prop_filter("finite", |f| f.is_finite()).prop_map(Field::Float),
        1 => "[1-9][0-9]{20,40}".prop_map(Field::Huge),
        1 => "\\PC{0,8}".prop_map(Field::Text),
    ]
}

fn page_size_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        6 => Just(Field::Number(4096)),
        2 => Just(Field::Absent),
        1 => Just(Field::Number(2 << 20)),
        1 => (0u32..64).prop_map(|shift| Field::Number(1u64 << shift)),
        1 => field(number()),
    ]
}

fn page_size_kib_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        6 => Just(Field::Absent),
        2 => Just(Field::Number(4096)),
        1 => Just(Field::Number(2 << 20)),
        1 => Just(Field::Number(4)),
        1 => (0u32..64).prop_map(|shift| Field::Number(1u64 << shift)),
        1 => field(number()),
    ]
}

/// A mapping the model accepts on its own: a page-aligned range in one of many 1 GiB slots, so
/// that a few of them rarely overlap, and a page size in any of the forms Firecracker sends (all
/// in bytes): both fields (1.12+), `page_size_kib` alone (1.7 to 1.11), neither (1.0 to 1.6),
/// `page_size` alone; sometimes with a field a later release may add.
fn plausible_mapping() -> impl Strategy<Value = Mapping> {
    let base = base_page_size() as u64;
    let page_size = prop_oneof![
        Just((Field::Number(4096), Field::Number(4096))),
        Just((Field::Absent, Field::Number(4096))),
        Just((Field::Absent, Field::Absent)),
        Just((Field::Number(4096), Field::Absent)),
        Just((Field::Number(4096), Field::Null)),
        // The two disagree: page_size wins.
        Just((Field::Number(4096), Field::Number(4))),
    ];
    (1u64..1024, 0u64..1024, 1u64..64, number(), page_size, prop::bool::weighted(0.1)).prop_map(
        move |(slot, page, pages, offset, (bytes, kib), unknown)| Mapping {
            base: Field::Number((slot << 30) + page * base),
            size: Field::Number(pages * base),
            offset: Field::Number(offset),
            page_size: bytes,
            page_size_kib: kib,
            unknown,
        },
    )
}

fn mapping() -> impl Strategy<Value = Mapping> {
    prop_oneof![2 => plausible_mapping(), 3 => any_mapping()]
}

fn any_mapping() -> impl Strategy<Value = Mapping> {
    (
        field(number()),
        field(number()),
        field(number()),
        page_size_field(),
        page_size_kib_field(),
        prop::bool::weighted(0.03),
    )
        .prop_map(|(base, size, offset, page_size, page_size_kib, unknown)| Mapping {
            base,
            size,
            offset,
            page_size,
            page_size_kib,
            unknown,
        })
}

/// Checks what `parse_ranges` accepted: every range valid, none overlapping.
fn check_accepted(ranges: &[HandshakeRange]) {
    assert!(!ranges.is_empty());
    for r in ranges {
        let RemoteRange { address, length, page_size } = r.range;
        assert!(page_size.is_power_of_two() && page_size >= 4096, "{r:?}");
        assert!(length > 0 && length % page_size == 0 && address % page_size == 0 && address != 0, "{r:?}");
        assert!(address.checked_add(length).is_some_and(|end| end <= isize::MAX as usize), "{r:?}");
        assert!(r.offset.checked_add(length as u64).is_some(), "{r:?}");
    }
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            let disjoint = a.range.address + a.range.length <= b.range.address
                || b.range.address + b.range.length <= a.range.address;
            assert!(disjoint, "{a:?} and {b:?} overlap");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_handshake_is_accepted_exactly_when_the_model_says_it_is_valid(
        mappings in prop::collection::vec(mapping(), 0..5),
    ) {
        let body = format!("[{}]", mappings.iter().map(Mapping::json).collect::<Vec<_>>().join(","));
        let parsed = parse_ranges(body.as_bytes());
        match (model(&mappings), parsed) {
            (Some(expected), Ok(ranges)) => prop_assert_eq!(ranges, expected, "{}", body),
            (None, Err(Error::Invalid { .. })) => {}
            (expected, got) => {
                return Err(TestCaseError::fail(format!("{body}: expected {expected:?}, got {got:?}")));
            }
        }
    }

    #[test]
    fn random_bytes_never_make_a_handshake_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        match parse_ranges(&body) {
            Ok(ranges) => check_accepted(&ranges),
            Err(err) => prop_assert!(matches!(err, Error::Invalid { .. }), "{err}"),
        }
    }

    #[test]
    fn mangled_json_never_makes_a_handshake_panic(
        mappings in prop::collection::vec(mapping(), 1..4),
        cut in any::<prop::sample::Index>(),
        insert in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        // A plausible body with a few random bytes (often not UTF-8) spliced in.
        let mut body = format!("[{}]", mappings.iter().map(Mapping::json).collect::<Vec<_>>().join(",")).into_bytes();
        let at = cut.index(body.len() + 1);
        body.splice(at..at, insert);
        match parse_ranges(&body) {
            Ok(ranges) => check_accepted(&ranges),
            Err(err) => prop_assert!(matches!(err, Error::Invalid { .. }), "{err}"),
        }
    }
}

#[test]
fn hostile_handshakes_are_refused() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let many = format!(
        "[{}]",
        (1..=2000)
            .map(|i| format!(r#"{{"base_host_virt_addr":{},"size":4096,"offset":0,"page_size":4096}}"#, i * 4096))
            .collect::<Vec<_>>()
            .join(",")
    );
    let hostile: &[&[u8]] = &[
        deep.as_bytes(),
        b"\xff\xfe[{}]",
        b"[{\"base_host_virt_addr\":\"\xff\",\"size\":4096,\"offset\":0,\"page_size\":4096}]",
        br#"[{"base_host_virt_addr":4096,"base_host_virt_addr":8192,"size":4096,"offset":0,"page_size":4096}]"#,
        br#"[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":4096,"page_size_kib":"4 KiB"}]"#,
        br#"[{"base_host_virt_addr":0,"size":4096,"offset":0,"page_size":4096}]"#,
        br#"[{"base_host_virt_addr":1e400,"size":4096,"offset":0,"page_size":4096}]"#,
        br#"[{"base_host_virt_addr":4096.0,"size":4096,"offset":0,"page_size":4096}]"#,
        br#"[{"base_host_virt_addr":-4096,"size":4096,"offset":0,"page_size":4096}]"#,
        br#"[{"base_host_virt_addr":4096,"size":18446744073709551616,"offset":0,"page_size":4096}]"#,
        br#"[{"base_host_virt_addr":4096,"size":4096,"offset":18446744073709551615,"page_size":4096}]"#,
        br#"[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size_kib":18014398509481984}]"#,
        br#"[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size_kib":4}]"#,
        br#"[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":4096,"page_size":4096}]"#,
        br#"[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":4096}] trailing"#,
        br#"{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":4096}"#,
        b"null",
        b"[null]",
        b"\"[]\"",
    ];
    for body in hostile {
        let result = parse_ranges(body);
        assert!(is_invalid(&result), "{:?} gave {result:?}", String::from_utf8_lossy(&body[..body.len().min(80)]));
    }
    assert_eq!(parse_ranges(many.as_bytes()).unwrap().len(), 2000);
}

// ---------------------------------------------------------------------------------------------
// Range checks

/// Offsets and lengths: mostly page multiples around the region, with every edge mixed in.
fn extent() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => (0..=PAGES + 2).prop_map(|pages| pages * PAGE),
        2 => 0..=SIZE + PAGE,
        1 => any::<usize>(),
        1 => (0..=PAGE * 4).prop_map(|back| usize::MAX - back),
        1 => (0..=PAGE * 4).prop_map(|back| (isize::MAX as usize) - back),
        1 => (0..=PAGE * 4).prop_map(|back| (usize::MAX - back) & !(PAGE - 1)),
    ]
}

/// Whether `[offset, offset + len)` is a non-empty, page-aligned range inside `size` bytes.
fn in_bounds(offset: usize, len: usize, size: usize, page: usize) -> bool {
    offset % page == 0 && len > 0 && len % page == 0 && (offset as u128) + (len as u128) <= size as u128
}

fn open() -> Arc<Userfaultfd> {
    Userfaultfd::open(Options::default()).expect("open a userfaultfd")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn check_range_accepts_exactly_the_aligned_ranges_inside_the_region(offset in extent(), len in extent()) {
        thread_local!(static REGION: Arc<Region> = Region::anonymous(SIZE).unwrap());
        REGION.with(|region| {
            let result = region.check_range("test", offset, len);
            if in_bounds(offset, len, region.size(), PAGE) {
                prop_assert_eq!(result.unwrap(), region.address() + offset);
            } else {
                prop_assert!(is_invalid(&result), "{offset}+{len}: {result:?}");
            }
            Ok(())
        })?;
    }

    #[test]
    fn remote_regions_are_made_exactly_for_valid_ranges_and_check_like_local_ones(
        address in prop_oneof![extent(), (1usize..1 << 35).prop_map(|pages| pages * PAGE)],
        size in extent(),
        page_shift in prop_oneof![8 => Just(12u32), 1 => Just(21u32), 1 => 0u32..64],
        offset in extent(),
        len in extent(),
    ) {
        let page = 1usize << page_shift;
        let valid = page >= PAGE
            && size > 0
            && size % page == 0
            && address % page == 0
            && address != 0
            && (address as u128) + (size as u128) <= isize::MAX as u128;
        let region = Region::remote(address, size, page);
        prop_assert_eq!(region.is_ok(), valid, "{:#x}+{} /{}: {:?}", address, size, page, region.as_ref().err());
        match region {
            Ok(region) => {
                let result = region.check_range("test", offset, len);
                if in_bounds(offset, len, size, page) {
                    prop_assert_eq!(result.unwrap(), address + offset);
                } else {
                    prop_assert!(is_invalid(&result));
                }
                prop_assert!(is_invalid(&region.check_local("test")));
                region.close();
            }
            Err(err) => prop_assert!(matches!(err, Error::Invalid { .. } | Error::OutOfRange { .. }), "{}", err),
        }
    }

    #[test]
    fn discard_accepts_exactly_the_aligned_ranges_inside_the_region(offset in extent(), len in extent()) {
        thread_local!(static REGION: Arc<Region> = Region::shmem(SIZE, "discard").unwrap());
        REGION.with(|region| {
            let result = region.discard(offset, len);
            if in_bounds(offset, len, SIZE, PAGE) {
                prop_assert!(result.is_ok(), "{offset}+{len}: {result:?}");
            } else {
                prop_assert!(is_invalid(&result), "{offset}+{len}: {result:?}");
            }
            Ok(())
        })?;
    }
}

/// A userfaultfd with an anonymous region registered whole for missing and wp faults, and a
/// second anonymous region to move pages from; one per test thread.
struct Served {
    uffd: Arc<Userfaultfd>,
    region: Arc<Region>,
    from: Arc<Region>,
}

thread_local!(static SERVED: Served = {
    let uffd = open();
    let region = Region::anonymous(SIZE).unwrap();
    uffd.register(&region, Modes { missing: true, minor: false, wp: true }, 0, None).unwrap();
    Served { uffd, region, from: Region::anonymous(SIZE).unwrap() }
});

/// The range operations a property picks from.
#[derive(Debug, Clone, Copy)]
enum Op {
    Copy,
    Zero,
    Wake,
    Protect,
    Unprotect,
    Poison,
    Move,
    /// A range given to `register` with `len: None`: the rest of the region.
    RegisterRest,
}

fn op() -> impl Strategy<Value = Op> {
    prop::sample::select(vec![
        Op::Copy,
        Op::Zero,
        Op::Wake,
        Op::Protect,
        Op::Unprotect,
        Op::Poison,
        Op::Move,
        Op::RegisterRest,
    ])
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn range_operations_refuse_exactly_the_ranges_outside_the_registered_region(
        op in op(),
        offset in extent(),
        len in extent(),
        from_offset in extent(),
        reset in prop::bool::weighted(0.1),
    ) {
        SERVED.with(|Served { uffd, region, from }| {
            if reset {
                // Pages mapped, protected or poisoned by earlier cases go, so later ones map again.
                region.discard(0, SIZE).unwrap();
            }
            let valid = in_bounds(offset, len, SIZE, PAGE);
            let result: Result<(), Error> = match op {
                Op::Copy => {
                    // A copy's length is its buffer's: keep it allocatable.
                    let len = len.min(SIZE + 3 * PAGE + 1);
                    let bytes = vec![0x5Au8; len];
                    let result = uffd.copy(region, offset, &bytes, Wake(true), Protect(len % (2 * PAGE) == 0));
                    let valid = in_bounds(offset, len, SIZE, PAGE);
                    prop_assert_eq!(is_invalid(&result), !valid, "copy {}+{}: {:?}", offset, len, result);
                    return Ok(());
                }
                Op::Zero => uffd.zero(region, offset, len, Wake(true)).map(drop),
                Op::Wake => uffd.wake(region, offset, len),
                Op::Protect => uffd.write_protect(region, offset, len, true, Wake(true)),
                Op::Unprotect => uffd.write_protect(region, offset, len, false, Wake(true)),
                Op::Poison => uffd.poison(region, offset, len, Wake(true)).map(drop),
                Op::Move => {
                    let result = uffd.r#move(region, offset, from, from_offset, len, Wake(true), true);
                    let valid = valid && in_bounds(from_offset, len, SIZE, PAGE);
                    prop_assert_eq!(is_invalid(&result), !valid, "move {}+{} from {}: {:?}", offset, len, from_offset, result);
                    return Ok(());
                }
                Op::RegisterRest => {
                    let modes = Modes { missing: true, minor: false, wp: true };
                    let result = uffd.register(region, modes, offset, None);
                    let valid = in_bounds(offset, SIZE.saturating_sub(offset), SIZE, PAGE);
                    prop_assert_eq!(is_invalid(&result), !valid, "register {}..: {:?}", offset, result);
                    return Ok(());
                }
            };
            prop_assert_eq!(is_invalid(&result), !valid, "{:?} {}+{}: {:?}", op, offset, len, result);
            Ok(())
        })?;
    }

    #[test]
    fn registrations_follow_a_model_of_the_registered_pages(
        steps in prop::collection::vec((any::<bool>(), extent(), prop::option::weighted(0.8, extent()), extent(), extent()), 1..12),
    ) {
        // Each step registers or unregisters a range, then wakes another: the wake must be
        // refused exactly when its range is out of bounds or not wholly registered.
        let uffd = open();
        let region = Region::anonymous(SIZE).unwrap();
        let mut registered = [false; PAGES];
        for (register, offset, len, probe_offset, probe_len) in steps {
            let whole = len.unwrap_or(SIZE.saturating_sub(offset));
            let valid = in_bounds(offset, whole, SIZE, PAGE);
            let result = if register {
                uffd.register(&region, Modes { missing: true, minor: false, wp: false }, offset, len).map(drop)
            } else {
                uffd.unregister(&region, offset, len)
            };
            prop_assert_eq!(is_invalid(&result), !valid, "{} {}+{:?}: {:?}", register, offset, len, result);
            if valid {
                prop_assert!(result.is_ok(), "{:?}", result);
                registered[offset / PAGE..(offset + whole) / PAGE].fill(register);
            }
            let covered = in_bounds(probe_offset, probe_len, SIZE, PAGE)
                && registered[probe_offset / PAGE..(probe_offset + probe_len) / PAGE].iter().all(|r| *r);
            let woken = uffd.wake(&region, probe_offset, probe_len);
            prop_assert_eq!(woken.is_ok(), covered, "wake {}+{} with {:?}: {:?}", probe_offset, probe_len, registered, woken);
            prop_assert!(woken.is_ok() || is_invalid(&woken));
        }
        uffd.close();
        region.close();
    }

    #[test]
    fn resolving_a_fault_that_is_not_in_flight_does_nothing(id in any::<u64>(), op in 0u8..7) {
        SERVED.with(|Served { uffd, from, .. }| {
            let page = [0u8; PAGE];
            let resolution = match op {
                0 => Resolution::Copy { bytes: &page, wake: true, protect: false },
                1 => Resolution::Zero { len: Some(usize::MAX), wake: true },
                2 => Resolution::Continue { len: None, wake: false, protect: true },
                3 => Resolution::Poison,
                4 => Resolution::Wake,
                5 => Resolution::Unprotect { wake: true },
                _ => Resolution::Move { from, from_offset: usize::MAX, len: Some(usize::MAX), wake: true, allow_holes: false },
            };
            prop_assert_eq!(uffd.resolve(id, resolution).unwrap(), 0);
            Ok(())
        })?;
    }
}
