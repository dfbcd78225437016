// The counters of a userfaultfd, as the binding keeps them and as the API shows them.
import type { BindingStats } from './binding'

/** Counters since the userfaultfd was opened. */
export interface UffdStats {
  /** Faults read from the kernel, by kind (a duplicate message for a page in flight counts too). */
  readonly faults: {
    /** Missing faults: a page that is not there. */
    readonly missing: number
    /** Minor faults: a page in the page cache, not mapped here. */
    readonly minor: number
    /** Write-protect faults: a write to a protected page. */
    readonly wp: number
  }
  /** Successful resolving ioctls, by kind. */
  readonly resolutions: {
    /** UFFDIO_COPY calls. */
    readonly copy: number
    /** UFFDIO_ZEROPAGE calls. */
    readonly zeropage: number
    /** UFFDIO_CONTINUE calls. */
    readonly continue: number
    /** UFFDIO_POISON calls. */
    readonly poison: number
    /** UFFDIO_WAKE calls. */
    readonly wake: number
    /** UFFDIO_WRITEPROTECT calls (protecting or unprotecting). */
    readonly writeProtect: number
    /** UFFDIO_MOVE calls. */
    readonly move: number
  }
  /** Non-cooperative events read (remove, unmap, remap, fork). */
  readonly events: number
  /** Resolves the kernel refused with EAGAIN behind an unread event, parked and retried. */
  readonly parked: number
  /** Resolves that found the page already mapped (another resolver won). */
  readonly eexist: number
  /** Messages for a page whose fault was already in flight, not dispatched again. */
  readonly duplicates: number
  /** Bytes mapped by COPY, ZEROPAGE, CONTINUE and MOVE. */
  readonly bytesMapped: number
  /** Batches handed to handlers. */
  readonly batches: number
  /** Messages read from the userfaultfd (faults and events). */
  readonly messages: number
  /** Faults resolved by the fallback. */
  readonly fallbacks: number
  /** Faults taken by the handler's own thread, resolved by the fallback (`ERR_UFFD_SELF_FAULT`). */
  readonly selfFaults: number
  /** Faults that waited longer than `timeoutMs`, resolved by the fallback (`ERR_UFFD_TIMEOUT`). */
  readonly timeouts: number
  /**
   * Troubles of the fault path, each also an `'error'` event: fallbacks (unresolved, timed out,
   * self-faults, handler gone), faults left asleep after `{ wake: false }`, failed fallbacks,
   * faults outside any region. A handler that throws after resolving its fault is an event only.
   */
  readonly errors: number
  /** Faults resolved by a native source on the loop thread, with no JavaScript. */
  readonly native: number
  /** Ranges of a file source that were holes (sparse files), mapped as zeros without a read. */
  readonly holes: number
  /** Faults handed over and not yet resolved (a gauge, not a counter). */
  readonly inFlight: number
  /** Faults waiting for a handler to be installed (a gauge, not a counter). */
  readonly queued: number
  /** Threads that read the fd (`readers`; 1 with `EVENT_FORK`). */
  readonly readers: number
  /** What the residency limits (`maxResident`) of its registrations did. */
  readonly residency: ResidencyStats
}

/** What the residency limits and write-back of a userfaultfd's registrations did ({@link RegisterOptions.maxResident}). */
export interface ResidencyStats {
  /** Bytes of limited ranges mapped now (a gauge). */
  readonly residentBytes: number
  /**
   * Of those, bytes the program wrote and that were not written back (a gauge): kept resident
   * until written back (a writable file source), or for good (any other source).
   */
  readonly dirtyBytes: number
  /** Pages written back to their file. */
  readonly writeBacks: number
  /** Write-backs that failed (their pages stay written, and are tried again later). */
  readonly writeBackErrors: number
  /** Pages dropped to keep to the limits. */
  readonly evictions: number
  /** The batches they were dropped in (one `madvise` per run of adjacent pages in a batch). */
  readonly evictionBatches: number
  /** Pages faulted in again after they were dropped. */
  readonly refaults: number
  /**
   * Faults that found their range past its limit (the evictor thread had not had a CPU in time)
   * and dropped the oldest pages themselves before mapping more: the limit holds under any load.
   */
  readonly evictionStalls: number
}

/** Native sources' fault latency, and when the first fault came. */
export interface LatencyReport {
  /** Faults a native source resolved (and timed). */
  readonly count: number
  /** Median time from reading a fault to resolving it, in microseconds (a quarter-octave bucket's lower edge). */
  readonly p50Micros: number
  /** 99th percentile of the same. */
  readonly p99Micros: number
  /** Milliseconds from opening (or adopting) the userfaultfd to its first fault; undefined before one. */
  readonly firstFaultMs: number | undefined
}

/** The binding's flat counters, grouped as {@link UffdStats}. */
export function statsOf(s: BindingStats): UffdStats {
  return {
    faults: { missing: s.faultsMissing, minor: s.faultsMinor, wp: s.faultsWp },
    resolutions: {
      copy: s.copies,
      zeropage: s.zeropages,
      continue: s.continues,
      poison: s.poisons,
      wake: s.wakes,
      writeProtect: s.writeProtects,
      move: s.moves,
    },
    events: s.events,
    parked: s.parked,
    native: s.native,
    eexist: s.eexist,
    duplicates: s.duplicates,
    bytesMapped: s.bytesMapped,
    batches: s.batches,
    messages: s.messages,
    fallbacks: s.fallbacks,
    selfFaults: s.selfFaults,
    timeouts: s.timeouts,
    errors: s.errors,
    holes: s.holes,
    inFlight: s.inFlight,
    queued: s.queued,
    readers: s.readers,
    residency: {
      // Limits are on private anonymous memory: base pages.
      residentBytes: s.residentPages * BASE_PAGE,
      dirtyBytes: s.dirtyPages * BASE_PAGE,
      writeBacks: s.writeBacks,
      writeBackErrors: s.writeBackErrors,
      evictions: s.evictions,
      evictionBatches: s.evictionBatches,
      refaults: s.refaults,
      evictionStalls: s.evictionStalls,
    },
  }
}

const BASE_PAGE = 4096
