// The C baseline of the benchmark: a minimal userfaultfd page-fault handler, all in one process.
//
// Built by bench/run.mjs with `cc -O2 -pthread -o bench/out/baseline bench/baseline.c` and run with
// arguments; prints one JSON object on stdout (and a message on stderr, exit status 1, on failure).
//
//   --mode latency     one thread touches fresh pages one by one, each touch timed (missing fault,
//                      served by a handler thread: epoll + read of up to 16 messages + COPY/ZEROPAGE;
//                      with --op continue, minor faults of a memfd whose page cache an alias filled,
//                      served by CONTINUE)
//   --mode throughput  --threads N threads touch their own slices; faults per second overall
//   --mode floor       the kernel's own fault: plain anonymous memory, no userfaultfd (read, then write)
//   --mode scan        a file read into a registered region by UFFDIO_COPY of --chunk bytes
//                      (pread + COPY), then one byte read per page: the reference bandwidth
//   --mode scan-fault  the same file served on fault by the handler thread: pread + COPY of --ra pages
//   --mode scan-mmap   the file mmap()ed privately: the kernel's own page-cache faults
//
// Other arguments: --op copy|zero|continue, --pages N (timed pages, or pages in all for throughput),
// --warmup N (untimed faults first, latency only), --pin same|cross|none (same: every thread on
// CPU 0; cross: the faulting threads on CPU 0 and the handler on CPU 1),
// --spin US (the handler polls epoll for US microseconds before it sleeps), --warm-mib M (touch and
// free M MiB first), --file PATH, --chunk BYTES, --ra PAGES.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MSGS_PER_READ 16
#define FILL_BYTE 0x5A

static long page_size;

static void die(const char *what) {
  fprintf(stderr, "baseline: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void fail(const char *what) {
  fprintf(stderr, "baseline: %s\n", what);
  exit(1);
}

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// ---- arguments -------------------------------------------------------------------------------

static const char *opt_mode = "latency";
static const char *opt_op = "copy";
static const char *opt_pin = "none";
static const char *opt_file = NULL;
static long opt_pages = 2000;
static long opt_warmup = 200;
static long opt_threads = 1;
static long opt_spin_us = 0;
static long opt_warm_mib = 64;
static long opt_chunk = 2 * 1024 * 1024;
static long opt_ra = 16;

static void parse(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) {
      fprintf(stderr, "baseline: %s needs a value\n", a);
      exit(2);
    }
    const char *v = argv[++i];
    if (!strcmp(a, "--mode")) opt_mode = v;
    else if (!strcmp(a, "--op")) opt_op = v;
    else if (!strcmp(a, "--pin")) opt_pin = v;
    else if (!strcmp(a, "--file")) opt_file = v;
    else if (!strcmp(a, "--pages")) opt_pages = atol(v);
    else if (!strcmp(a, "--warmup")) opt_warmup = atol(v);
    else if (!strcmp(a, "--threads")) opt_threads = atol(v);
    else if (!strcmp(a, "--spin")) opt_spin_us = atol(v);
    else if (!strcmp(a, "--warm-mib")) opt_warm_mib = atol(v);
    else if (!strcmp(a, "--chunk")) opt_chunk = atol(v);
    else if (!strcmp(a, "--ra")) opt_ra = atol(v);
    else {
      fprintf(stderr, "baseline: unknown argument %s\n", a);
      exit(2);
    }
  }
  if (opt_pages <= 0 || opt_threads <= 0 || opt_warmup < 0 || opt_ra <= 0 || opt_chunk <= 0) fail("bad numeric argument");
}

// ---- memory ----------------------------------------------------------------------------------

static char *map_anon(size_t len) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) die("mmap");
  return p;
}

// Touch and free some memory, so that the pages the guest gave back to the host are backed again.
static void warm_memory(void) {
  if (opt_warm_mib <= 0) return;
  size_t len = (size_t)opt_warm_mib << 20;
  char *p = map_anon(len);
  memset(p, 1, len);
  munmap(p, len);
}

static void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  // This thread; threads it creates later inherit the mask.
  if (sched_setaffinity(0, sizeof set, &set)) die("sched_setaffinity");
}

// same: every thread on CPU 0. cross: the faulting thread(s) on CPU 0, the handler on CPU 1.
static void pin_if_asked(void) {
  if (!strcmp(opt_pin, "same") || !strcmp(opt_pin, "cross")) pin_to(0);
  else if (strcmp(opt_pin, "none")) fail("--pin must be same, cross or none");
}

// ---- the userfaultfd and its handler -----------------------------------------------------------

enum source { SRC_COPY, SRC_ZERO, SRC_FILE, SRC_CONTINUE };

struct handler {
  int uffd;
  int epoll;
  int stop;  // an eventfd: written once to stop the handler
  char *base;
  size_t size;
  enum source source;
  char *page;  // the page COPY maps (SRC_COPY)
  int file;    // SRC_FILE: pread from here
  size_t ra_bytes;
  char *scratch;
  long spin_us;
  long faults;
  long resolved;
  long eexist;
  long reads;
  long errors;
  int last_errno;
  volatile int cpu;  // the CPU the handler last resolved a fault on
};

static int open_uffd(void) {
  int fd = (int)syscall(SYS_userfaultfd, O_NONBLOCK | O_CLOEXEC);
  if (fd < 0 && (errno == EPERM || errno == EACCES))
    fd = (int)syscall(SYS_userfaultfd, O_NONBLOCK | O_CLOEXEC | UFFD_USER_MODE_ONLY);
  if (fd < 0) die("userfaultfd");
  // Minor faults of shmem must be asked for; the other modes need no feature.
  uint64_t features = !strcmp(opt_op, "continue") ? UFFD_FEATURE_MINOR_SHMEM : 0;
  struct uffdio_api api = {.api = UFFD_API, .features = features};
  if (ioctl(fd, UFFDIO_API, &api)) die("UFFDIO_API");
  return fd;
}

static void register_range(int uffd, char *base, size_t len, uint64_t mode) {
  struct uffdio_register reg = {.range = {.start = (uintptr_t)base, .len = len}, .mode = mode};
  if (ioctl(uffd, UFFDIO_REGISTER, &reg)) die("UFFDIO_REGISTER");
}

static void register_missing(int uffd, char *base, size_t len) {
  register_range(uffd, base, len, UFFDIO_REGISTER_MODE_MISSING);
}

// A memfd mapped twice: the alias is written (the page cache fills), the other mapping is what
// the minor faults come from.
static char *map_shmem_filled(size_t len) {
  int fd = memfd_create("baseline", MFD_CLOEXEC);
  if (fd < 0) die("memfd_create");
  if (ftruncate(fd, (off_t)len)) die("ftruncate");
  char *alias = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  char *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (alias == MAP_FAILED || base == MAP_FAILED) die("mmap(memfd)");
  memset(alias, FILL_BYTE, len);
  munmap(alias, len);
  close(fd);
  return base;
}

static void wake(struct handler *h, uintptr_t page) {
  struct uffdio_range range = {.start = page, .len = (uint64_t)page_size};
  ioctl(h->uffd, UFFDIO_WAKE, &range);
}

// COPY of `len` bytes from `src` to `dst`, retrying a partial copy; EEXIST counts as done.
static int copy_range(struct handler *h, uintptr_t dst, const char *src, size_t len) {
  size_t done = 0;
  while (done < len) {
    struct uffdio_copy copy = {.dst = dst + done, .src = (uintptr_t)(src + done), .len = len - done, .mode = 0};
    if (ioctl(h->uffd, UFFDIO_COPY, &copy) == 0) return 0;
    if (errno == EEXIST) {
      h->eexist++;
      wake(h, dst);
      return 0;
    }
    if (errno == EAGAIN && copy.copy > 0) {
      done += (size_t)copy.copy;
      continue;
    }
    if (errno == EAGAIN) continue;
    h->last_errno = errno;
    return -1;
  }
  return 0;
}

// An ioctl that maps one page (ZEROPAGE, CONTINUE); EEXIST counts as done. Returns 1 on failure.
static int map_page(struct handler *h, unsigned long request, void *arg, uintptr_t page) {
  if (ioctl(h->uffd, request, arg) == 0) return 0;
  if (errno == EEXIST) {
    h->eexist++;
    wake(h, page);
    return 0;
  }
  h->last_errno = errno;
  return 1;
}

static void resolve(struct handler *h, uintptr_t address) {
  uintptr_t page = address & ~(uintptr_t)(page_size - 1);
  h->cpu = sched_getcpu();
  int bad = 0;
  if (h->source == SRC_COPY) {
    bad = copy_range(h, page, h->page, (size_t)page_size);
  } else if (h->source == SRC_CONTINUE) {
    struct uffdio_continue cont = {.range = {.start = page, .len = (uint64_t)page_size}, .mode = 0};
    bad = map_page(h, UFFDIO_CONTINUE, &cont, page);
  } else if (h->source == SRC_ZERO) {
    struct uffdio_zeropage zero = {.range = {.start = page, .len = (uint64_t)page_size}, .mode = 0};
    bad = map_page(h, UFFDIO_ZEROPAGE, &zero, page);
  } else {
    size_t offset = page - (uintptr_t)h->base;
    size_t len = h->ra_bytes;
    if (offset + len > h->size) len = h->size - offset;
    ssize_t got = pread(h->file, h->scratch, len, (off_t)offset);
    if (got < 0) {
      h->last_errno = errno;
      bad = 1;
    } else {
      if ((size_t)got < len) memset(h->scratch + got, 0, len - (size_t)got);
      bad = copy_range(h, page, h->scratch, len);
    }
  }
  if (bad) {
    // Never leave the thread asleep: count the failure and wake it (it will fault again).
    h->errors++;
    wake(h, page);
  } else {
    h->resolved++;
  }
}

static void *handler_main(void *arg) {
  struct handler *h = arg;
  if (!strcmp(opt_pin, "cross")) pin_to(1);
  struct epoll_event events[2];
  struct uffd_msg msgs[MSGS_PER_READ];
  for (;;) {
    int n;
    if (h->spin_us > 0) {
      uint64_t until = now_ns() + (uint64_t)h->spin_us * 1000u;
      do n = epoll_wait(h->epoll, events, 2, 0);
      while (n == 0 && now_ns() < until);
      if (n == 0) n = epoll_wait(h->epoll, events, 2, -1);
    } else {
      n = epoll_wait(h->epoll, events, 2, -1);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      if (events[i].data.fd == h->stop) return NULL;
      if (events[i].events & (EPOLLERR | EPOLLHUP)) fail("the userfaultfd reported POLLERR");
    }
    for (;;) {
      ssize_t r = read(h->uffd, msgs, sizeof msgs);
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        die("read(userfaultfd)");
      }
      h->reads++;
      size_t count = (size_t)r / sizeof msgs[0];
      for (size_t i = 0; i < count; i++) {
        if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
        h->faults++;
        resolve(h, (uintptr_t)msgs[i].arg.pagefault.address);
      }
      if (count < MSGS_PER_READ) break;
    }
  }
}

static pthread_t start_handler(struct handler *h) {
  h->epoll = epoll_create1(EPOLL_CLOEXEC);
  if (h->epoll < 0) die("epoll_create1");
  h->stop = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (h->stop < 0) die("eventfd");
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = h->uffd};
  if (epoll_ctl(h->epoll, EPOLL_CTL_ADD, h->uffd, &ev)) die("epoll_ctl");
  ev.data.fd = h->stop;
  if (epoll_ctl(h->epoll, EPOLL_CTL_ADD, h->stop, &ev)) die("epoll_ctl");
  pthread_t thread;
  if (pthread_create(&thread, NULL, handler_main, h)) fail("pthread_create failed");
  return thread;
}

static void stop_handler(struct handler *h, pthread_t thread) {
  uint64_t one = 1;
  if (write(h->stop, &one, sizeof one) != sizeof one) die("write(eventfd)");
  pthread_join(thread, NULL);
  close(h->stop);
  close(h->epoll);
}

static void print_handler(const struct handler *h) {
  printf("\"handler\":{\"faults\":%ld,\"resolved\":%ld,\"eexist\":%ld,\"reads\":%ld,\"errors\":%ld,\"lastErrno\":%d}", h->faults,
         h->resolved, h->eexist, h->reads, h->errors, h->last_errno);
}

static void print_array(const char *name, const uint64_t *values, long n) {
  printf("\"%s\":[", name);
  for (long i = 0; i < n; i++) printf(i ? ",%llu" : "%llu", (unsigned long long)values[i]);
  printf("]");
}

static void setup_handler(struct handler *h, char *base, size_t size) {
  memset(h, 0, sizeof *h);
  h->uffd = open_uffd();
  h->base = base;
  h->size = size;
  h->spin_us = opt_spin_us;
  h->source = !strcmp(opt_op, "zero") ? SRC_ZERO : !strcmp(opt_op, "continue") ? SRC_CONTINUE : SRC_COPY;
  if (strcmp(opt_op, "zero") && strcmp(opt_op, "copy") && strcmp(opt_op, "continue"))
    fail("--op must be copy, zero or continue");
  h->page = aligned_alloc((size_t)page_size, (size_t)page_size);
  if (!h->page) fail("out of memory");
  memset(h->page, FILL_BYTE, (size_t)page_size);
  register_range(h->uffd, base, size, h->source == SRC_CONTINUE ? UFFDIO_REGISTER_MODE_MINOR : UFFDIO_REGISTER_MODE_MISSING);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

// ---- modes -----------------------------------------------------------------------------------

// Reads one byte of each of opt_pages pages from page `first` on, each read timed into `lat`;
// returns how many were not `expect`. With `cpu`, counts in `*same` the reads after which this
// thread ran on the CPU the handler last used.
static long timed_reads(char *base, long first, uint64_t *lat, unsigned char expect, volatile int *cpu, long *same) {
  long bad = 0;
  for (long i = 0; i < opt_pages; i++) {
    volatile unsigned char *p = (volatile unsigned char *)base + (size_t)(first + i) * (size_t)page_size;
    uint64_t t0 = now_ns();
    unsigned char v = *p;
    uint64_t t1 = now_ns();
    lat[i] = t1 - t0;
    bad += v != expect;
    if (cpu) *same += sched_getcpu() == *cpu;
  }
  return bad;
}

static int mode_latency(void) {
  size_t pages = (size_t)(opt_warmup + opt_pages);
  size_t size = pages * (size_t)page_size;
  char *base = !strcmp(opt_op, "continue") ? map_shmem_filled(size) : map_anon(size);
  struct handler h;
  setup_handler(&h, base, size);
  pthread_t thread = start_handler(&h);
  unsigned char expect = h.source == SRC_ZERO ? 0 : FILL_BYTE;
  long bad = 0;
  for (long i = 0; i < opt_warmup; i++) bad += ((volatile unsigned char *)base)[(size_t)i * (size_t)page_size] != expect;
  uint64_t *lat = calloc((size_t)opt_pages, sizeof *lat);
  long same_cpu = 0;  // faults after which the faulting thread ran on the CPU that resolved it
  bad += timed_reads(base, opt_warmup, lat, expect, &h.cpu, &same_cpu);
  // The cost of the timing itself: the same timed reads of the pages, now mapped (median).
  uint64_t *again = calloc((size_t)opt_pages, sizeof *again);
  bad += timed_reads(base, opt_warmup, again, expect, NULL, NULL);
  qsort(again, (size_t)opt_pages, sizeof *again, cmp_u64);
  uint64_t resident = again[opt_pages / 2];
  stop_handler(&h, thread);
  printf("{\"ok\":true,\"mode\":\"latency\",\"op\":\"%s\",\"pin\":\"%s\",\"spinMicros\":%ld,\"bad\":%ld,\"residentReadNs\":%llu,\"sameCpuShare\":%.3f,",
         opt_op, opt_pin, opt_spin_us, bad, (unsigned long long)resident, (double)same_cpu / (double)opt_pages);
  print_handler(&h);
  printf(",");
  print_array("latNs", lat, opt_pages);
  printf("}\n");
  munmap(base, size);
  close(h.uffd);
  return bad || h.errors ? 1 : 0;
}

struct toucher {
  char *base;
  size_t first, count;
  unsigned char expect;
  pthread_barrier_t *barrier;
  long bad;
  uint64_t end;
};

static void *toucher_main(void *arg) {
  struct toucher *t = arg;
  pthread_barrier_wait(t->barrier);
  long bad = 0;
  for (size_t i = 0; i < t->count; i++)
    bad += ((volatile unsigned char *)t->base)[(t->first + i) * (size_t)page_size] != t->expect;
  t->end = now_ns();
  t->bad = bad;
  return NULL;
}

static int mode_throughput(void) {
  size_t per = (size_t)(opt_pages / opt_threads);
  size_t pages = per * (size_t)opt_threads;
  size_t size = pages * (size_t)page_size;
  char *base = map_anon(size);
  struct handler h;
  setup_handler(&h, base, size);
  pthread_t thread = start_handler(&h);
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, (unsigned)opt_threads + 1);
  struct toucher *ts = calloc((size_t)opt_threads, sizeof *ts);
  pthread_t *threads = calloc((size_t)opt_threads, sizeof *threads);
  for (long i = 0; i < opt_threads; i++) {
    ts[i] = (struct toucher){.base = base, .first = (size_t)i * per, .count = per, .barrier = &barrier,
                             .expect = h.source == SRC_ZERO ? 0 : FILL_BYTE};
    if (pthread_create(&threads[i], NULL, toucher_main, &ts[i])) fail("pthread_create failed");
  }
  pthread_barrier_wait(&barrier);
  uint64_t t0 = now_ns();
  uint64_t end = t0;
  long bad = 0;
  for (long i = 0; i < opt_threads; i++) {
    pthread_join(threads[i], NULL);
    if (ts[i].end > end) end = ts[i].end;
    bad += ts[i].bad;
  }
  stop_handler(&h, thread);
  printf("{\"ok\":true,\"mode\":\"throughput\",\"op\":\"%s\",\"pin\":\"%s\",\"threads\":%ld,\"faults\":%zu,\"elapsedNs\":%llu,\"bad\":%ld,",
         opt_op, opt_pin, opt_threads, pages, (unsigned long long)(end - t0), bad);
  print_handler(&h);
  printf("}\n");
  munmap(base, size);
  close(h.uffd);
  return bad || h.errors ? 1 : 0;
}

static int mode_floor(void) {
  size_t size = (size_t)opt_pages * (size_t)page_size;
  uint64_t *rd = calloc((size_t)opt_pages, sizeof *rd);
  uint64_t *wr = calloc((size_t)opt_pages, sizeof *wr);
  char *a = map_anon(size);
  char *b = map_anon(size);
  long bad = 0;
  for (long i = 0; i < opt_pages; i++) {
    volatile unsigned char *p = (volatile unsigned char *)a + (size_t)i * (size_t)page_size;
    uint64_t t0 = now_ns();
    unsigned char v = *p;
    uint64_t t1 = now_ns();
    rd[i] = t1 - t0;
    bad += v != 0;
  }
  for (long i = 0; i < opt_pages; i++) {
    volatile unsigned char *p = (volatile unsigned char *)b + (size_t)i * (size_t)page_size;
    uint64_t t0 = now_ns();
    *p = 1;
    uint64_t t1 = now_ns();
    wr[i] = t1 - t0;
  }
  printf("{\"ok\":true,\"mode\":\"floor\",\"pin\":\"%s\",\"bad\":%ld,", opt_pin, bad);
  print_array("readNs", rd, opt_pages);
  printf(",");
  print_array("writeNs", wr, opt_pages);
  printf("}\n");
  munmap(a, size);
  munmap(b, size);
  return bad ? 1 : 0;
}

// Expected byte of page i of the scan file (bench/run.mjs writes it so).
static inline unsigned char scan_byte(size_t i) { return (unsigned char)((i * 7 + 3) & 0xff); }

static int mode_scan(const char *mode) {
  if (!opt_file) fail("--file is needed");
  int fd = open(opt_file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("open(--file)");
  struct stat st;
  if (fstat(fd, &st)) die("fstat");
  size_t size = (size_t)st.st_size & ~(size_t)(page_size - 1);
  size_t pages = size / (size_t)page_size;
  struct handler h;
  memset(&h, 0, sizeof h);
  h.uffd = -1;
  pthread_t thread = 0;
  char *base = NULL;
  long bad = 0;
  uint64_t first = 0;
  uint64_t t0 = now_ns();
  if (!strcmp(mode, "scan-mmap")) {
    base = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (base == MAP_FAILED) die("mmap(file)");
  } else {
    base = map_anon(size);
    h.uffd = open_uffd();
    h.base = base;
    h.size = size;
    register_missing(h.uffd, base, size);
    if (!strcmp(mode, "scan")) {
      // The reference: pread + UFFDIO_COPY of whole chunks, before any read.
      size_t chunk = (size_t)opt_chunk;
      char *buf = aligned_alloc((size_t)page_size, chunk);
      if (!buf) fail("out of memory");
      for (size_t off = 0; off < size; off += chunk) {
        size_t len = size - off < chunk ? size - off : chunk;
        size_t got = 0;
        while (got < len) {
          ssize_t r = pread(fd, buf + got, len - got, (off_t)(off + got));
          if (r < 0) die("pread");
          if (r == 0) break;
          got += (size_t)r;
        }
        if (copy_range(&h, (uintptr_t)base + off, buf, len)) {
          errno = h.last_errno;
          die("UFFDIO_COPY");
        }
      }
      free(buf);
    } else {
      h.source = SRC_FILE;
      h.file = fd;
      h.ra_bytes = (size_t)opt_ra * (size_t)page_size;
      h.scratch = aligned_alloc((size_t)page_size, h.ra_bytes);
      if (!h.scratch) fail("out of memory");
      h.spin_us = opt_spin_us;
      thread = start_handler(&h);
    }
  }
  volatile unsigned char *p = (volatile unsigned char *)base;
  unsigned long long sum = 0;
  for (size_t i = 0; i < pages; i++) {
    unsigned char v = p[i * (size_t)page_size];
    if (i == 0) first = now_ns();
    bad += v != scan_byte(i);
    sum += v;
  }
  uint64_t end = now_ns();
  if (thread) stop_handler(&h, thread);
  printf("{\"ok\":true,\"mode\":\"%s\",\"pin\":\"%s\",\"bytes\":%zu,\"elapsedNs\":%llu,\"ttfbNs\":%llu,\"bad\":%ld,\"sum\":%llu,",
         mode, opt_pin, size, (unsigned long long)(end - t0), (unsigned long long)(first - t0), bad, sum);
  print_handler(&h);
  printf("}\n");
  munmap(base, size);
  if (h.uffd >= 0) close(h.uffd);
  close(fd);
  return bad || h.errors ? 1 : 0;
}

int main(int argc, char **argv) {
  page_size = sysconf(_SC_PAGESIZE);
  parse(argc, argv);
  pin_if_asked();
  warm_memory();
  int status;
  if (!strcmp(opt_mode, "latency")) status = mode_latency();
  else if (!strcmp(opt_mode, "throughput")) status = mode_throughput();
  else if (!strcmp(opt_mode, "floor")) status = mode_floor();
  else if (!strcmp(opt_mode, "scan") || !strcmp(opt_mode, "scan-fault") || !strcmp(opt_mode, "scan-mmap")) status = mode_scan(opt_mode);
  else fail("unknown --mode");
  fflush(stdout);
  if (status) fprintf(stderr, "baseline: wrong bytes read or resolves that failed (see \"bad\" and \"handler\")\n");
  return status;
}
