// The kernel's feature and ioctl names, as UFFDIO_API and UFFDIO_REGISTER report them.

/** A userfaultfd feature: the kernel's `UFFD_FEATURE_*` name without the prefix. */
export type FeatureName =
  | 'PAGEFAULT_FLAG_WP'
  | 'EVENT_FORK'
  | 'EVENT_REMAP'
  | 'EVENT_REMOVE'
  | 'MISSING_HUGETLBFS'
  | 'MISSING_SHMEM'
  | 'EVENT_UNMAP'
  | 'SIGBUS'
  | 'THREAD_ID'
  | 'MINOR_HUGETLBFS'
  | 'MINOR_SHMEM'
  | 'EXACT_ADDRESS'
  | 'WP_HUGETLBFS_SHMEM'
  | 'WP_UNPOPULATED'
  | 'POISON'
  | 'WP_ASYNC'
  | 'MOVE'

/** A userfaultfd ioctl: the kernel's `_UFFDIO_*` name without the prefix. */
export type IoctlName = 'REGISTER' | 'UNREGISTER' | 'WAKE' | 'COPY' | 'ZEROPAGE' | 'MOVE' | 'WRITEPROTECT' | 'CONTINUE' | 'POISON' | 'API'

/**
 * A list of kernel names, features or ioctls, wherever the API gives one (`uffd.features`,
 * `Userfaultfd.probe()`, `register()`'s `ioctls`): a set that cannot change, asked with `has()`,
 * iterated in the kernel's order, and printed by `JSON.stringify` as an array of the names.
 */
export interface NameSet<T extends string> extends ReadonlySet<T> {
  /** The names as an array, in the kernel's order: what `JSON.stringify` prints. */
  toJSON(): T[]
  /**
   * Whether the set holds `name`, as `has(name)`.
   * @deprecated Use `has(name)`; kept for code written when `probe()` gave arrays.
   */
  includes(name: T): boolean
}

/** The features of a userfaultfd or of the kernel: see {@link NameSet}. */
export type FeatureSet = NameSet<FeatureName>
/** The ioctls the kernel offers or allows on a range: see {@link NameSet}. */
export type IoctlSet = NameSet<IoctlName>

/** What the kernel offers, from `Userfaultfd.probe()`. */
export interface ProbeResult {
  /** The API version, 0xAA. */
  readonly api: number
  /** The features the kernel supports (UFFDIO_API). */
  readonly features: FeatureSet
  /** The ioctls the kernel supports on a userfaultfd (UFFDIO_API). */
  readonly ioctls: IoctlSet
}

/** A Set that refuses changes once made, and prints as an array. */
class FrozenNames<T extends string> extends Set<T> implements NameSet<T> {
  #frozen = false

  constructor(names: Iterable<string>) {
    super()
    for (const name of names) super.add(name as T)
    this.#frozen = true
  }

  override add(name: T): this {
    if (this.#frozen) throw new TypeError('This set of names is read-only')
    return super.add(name)
  }

  override delete(_name: T): boolean {
    throw new TypeError('This set of names is read-only')
  }

  override clear(): void {
    throw new TypeError('This set of names is read-only')
  }

  toJSON(): T[] {
    return [...this]
  }

  includes(name: T): boolean {
    return this.has(name)
  }
}

/** The one type of every list of feature or ioctl names the API gives. */
export function nameSet<T extends string>(names: Iterable<string>): NameSet<T> {
  return new FrozenNames<T>(names)
}
