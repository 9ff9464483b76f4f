//! Workloads with known VMA behaviour, for vmatrace's tests and benchmark.
//!
//! Every mode talks through raw syscalls and `write(2)` so that the Rust
//! runtime adds no mapping calls of its own while it runs. Protocol:
//! - `--wait` holds the workload after start-up until a line arrives on
//!   stdin ("go"), so a tracer can attach first;
//! - a *marker* is `madvise(NULL, 0, MADV_NORMAL)`: a no-op a tracer sees,
//!   placed before and after each measured phase;
//! - `--pause` makes the workload print `paused pid=N` on stderr after the
//!   final marker and wait for a stdin line, so /proc/N/maps can be read
//!   while the process still holds its mappings;
//! - `--linger` makes it stay 100 ms after the final marker, then exit: a
//!   short-lived process, gone before a tracer is done with its events;
//! - `--hold-threads` makes `threads` wait for a stdin line once its
//!   threads exist, before they start (a tracer can attach to a
//!   multi-threaded process then).
//!
//! Modes:
//!   incident [PAGES]          map PAGES pages (default 2 x vm.max_map_count),
//!                             then unmap every other page until munmap
//!                             fails with ENOMEM 3 times
//!   malloc N                  glibc malloc, touch and free a 129 KiB block, N times
//!   threads T M [SETTLE_MS]   T threads each cut a guarded region (1
//!                             mprotect + M hole munmaps) while also mapping
//!                             and unmapping whole shared mappings; they
//!                             start SETTLE_MS after they were created
//!   churn N [PAGES]           N times: mmap PAGES pages, touch each, munmap
//!   split-churn N             N times: mmap 3 pages, munmap the middle one
//!                             (a split), munmap the rest
//!   fork                      fork a child that maps and cuts, wait for it
//!   named-split               punch a hole from punch_hole_in_named_function
//!   mmap N                    N mmap/munmap pairs of one page
//!   mappings                  one cut in each kind of mapping: 3 pages of
//!                             its own executable mapped (fd closed at once)
//!                             and the middle one unmapped, the same in an
//!                             anonymous mapping, the heap grown and shrunk
//!                             with brk, a no-op mprotect on the stack
//!   probe-point               calls `workload_probe_point` once (a test
//!                             puts a uprobe there: the kernel maps its
//!                             [uprobes] page on the first hit); with
//!                             --with-thread a second thread sleeps
//!                             meanwhile, the call 1 s after it started
//!   shared-vm                 a thread, then (after 1 s) a process sharing
//!                             the address space (clone(CLONE_VM), not a
//!                             thread) maps 3 pages and unmaps the middle
//!                             one; the workload waits for it
//!   outside N [SETTLE_MS]     changes the count through calls other than
//!                             the mapping ones, a page at a time, every
//!                             other page of a mapping of its own each (a
//!                             cut): N mbinds, N userfaultfd registrations,
//!                             N/5 anonymous names (prctl, where the kernel
//!                             has them), 16 io_setups and 8 io_destroys,
//!                             then closes the userfaultfd (its ranges merge
//!                             back); with --with-thread a second thread
//!                             sleeps meanwhile; the work starts after
//!                             SETTLE_MS (default 1000)
//!   anatomy H P T F DIR       a known layout to explain (`vmatrace maps`):
//!                             H anonymous pieces with holes between them,
//!                             a patchwork of 2P+1 pieces of alternating
//!                             protections, 3 pieces of which the middle
//!                             one has another NUMA policy (mbind) and 3 of
//!                             which the middle one is locked (mlock), each
//!                             with unmapped pages around it; T threads
//!                             that sleep; F one-page files created in DIR
//!                             and mapped (their descriptors closed); then
//!                             reports the addresses (use --pause)

use std::{
    ffi::c_void,
    ptr,
    sync::atomic::{AtomicU32, Ordering},
    time::Instant,
};

const PAGE: usize = 4096;

fn say(text: &str) {
    let line = format!("workload: {text}\n");
    // SAFETY: writing a valid buffer to stderr.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

fn wait_for_line() {
    let mut byte = 0u8;
    loop {
        // SAFETY: reading one byte into a valid stack location.
        let n = unsafe { libc::read(0, (&mut byte as *mut u8).cast(), 1) };
        if n <= 0 || byte == b'\n' {
            return;
        }
    }
}

fn marker() {
    // SAFETY: a zero-length madvise touches nothing.
    unsafe { libc::madvise(ptr::null_mut(), 0, libc::MADV_NORMAL) };
}

fn map(pages: usize, prot: i32, flags: i32) -> *mut u8 {
    // SAFETY: an anonymous mapping at an address of the kernel's choosing.
    let p = unsafe { libc::mmap(ptr::null_mut(), pages * PAGE, prot, flags, -1, 0) };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap failed: {}",
        std::io::Error::last_os_error()
    );
    p.cast()
}

fn unmap(addr: *mut u8, pages: usize) -> Result<(), i32> {
    // SAFETY: the ranges unmapped are the workload's own mappings.
    let rc = unsafe { libc::munmap(addr.cast(), pages * PAGE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
const PRIVATE: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
const SHARED: i32 = libc::MAP_SHARED | libc::MAP_ANONYMOUS;

fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65530)
}

/// The reproducer of the jemalloc abort: a mapping of 2 x limit pages
/// unmapped every other page, each unmap a new hole, until the count
/// reaches the limit and munmap fails with ENOMEM.
fn incident(pages: usize) {
    let base = map(pages, RW, PRIVATE);
    let (mut holes, mut failures, mut first_failure) = (0usize, 0usize, None);
    let mut page = 1;
    while page + 1 < pages && failures < 3 {
        // SAFETY: within the mapping made above.
        match unmap(unsafe { base.add(page * PAGE) }, 1) {
            Ok(()) => holes += 1,
            Err(errno) => {
                assert_eq!(errno, libc::ENOMEM, "munmap failed otherwise");
                failures += 1;
                first_failure.get_or_insert(page);
            }
        }
        page += 2;
    }
    say(&format!(
        "incident base={:#x} pages={pages} holes={holes} enomem={failures} first_enomem_page={}",
        base as usize,
        first_failure.map_or(-1, |p| p as i64)
    ));
}

/// glibc serves blocks above its mmap threshold (128 KiB) with mmap and
/// frees them with a munmap of the whole block. The threshold is pinned,
/// as glibc would otherwise raise it after the first free and serve the
/// rest from the brk heap.
fn malloc_blocks(n: usize) {
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    for _ in 0..n {
        // SAFETY: plain malloc; the block is written within its size and
        // freed once.
        unsafe {
            let block = libc::malloc(129 * 1024) as *mut u8;
            assert!(!block.is_null());
            block.write_volatile(1);
            libc::free(block.cast());
        }
    }
    say(&format!("malloc blocks={n}"));
}

static START: AtomicU32 = AtomicU32::new(0);
static ROUNDS: AtomicU32 = AtomicU32::new(0);

/// One thread's share: a region of 2M+3 pages, PROT_NONE guards at both
/// ends, the inner 2M+1 pages made read-write (one mprotect: a SPLIT that
/// adds 2 VMAs), then pages 2, 4, ..., 2M unmapped (M holes: a SPLIT that
/// adds 1 VMA each). Between the holes,
/// a shared anonymous mapping is mapped and unmapped whole: never a cut,
/// since shared anonymous mappings never merge with a neighbour.
extern "C" fn cutter(_: *mut c_void) -> *mut c_void {
    while START.load(Ordering::Acquire) == 0 {
        // Yield: on one CPU, spinning threads would starve the tracer.
        std::thread::yield_now();
    }
    let m = ROUNDS.load(Ordering::Relaxed) as usize;
    let region = map(2 * m + 3, libc::PROT_NONE, PRIVATE);
    // SAFETY: all addresses are inside `region`.
    unsafe {
        assert_eq!(
            libc::mprotect(region.add(PAGE).cast(), (2 * m + 1) * PAGE, RW),
            0
        );
        for k in 1..=m {
            let noise = map(2, RW, SHARED);
            unmap(region.add(2 * k * PAGE), 1).expect("hole");
            unmap(noise, 2).expect("whole unmap");
        }
    }
    ptr::null_mut()
}

fn threads(t: usize, m: usize, settle_ms: usize, hold: bool) {
    ROUNDS.store(m as u32, Ordering::Relaxed);
    let mut handles = vec![0 as libc::pthread_t; t];
    for handle in handles.iter_mut() {
        // SAFETY: cutter has the pthread start signature and uses no Rust
        // allocation, so the thread creates no malloc arena of its own.
        let rc = unsafe { libc::pthread_create(handle, ptr::null(), cutter, ptr::null_mut()) };
        assert_eq!(rc, 0);
    }
    say(&format!("threads created: {t}"));
    if hold {
        wait_for_line();
    }
    // A tracer that learns of the threads may prepare for them first.
    std::thread::sleep(std::time::Duration::from_millis(settle_ms as u64));
    marker();
    START.store(1, Ordering::Release);
    for handle in handles {
        // SAFETY: joining threads created above, once each.
        unsafe { libc::pthread_join(handle, ptr::null_mut()) };
    }
    marker();
    say(&format!(
        "threads={t} rounds={m} expected_splits={} expected_added={}",
        t * (m + 1),
        t * (m + 2)
    ));
}

fn churn(n: usize, pages: usize) {
    let start = Instant::now();
    for _ in 0..n {
        let p = map(pages, RW, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS);
        for i in 0..pages {
            // SAFETY: inside the fresh mapping.
            unsafe { p.add(i * PAGE).write_volatile(1) };
        }
        unmap(p, pages).expect("unmap");
    }
    say(&format!(
        "churn iterations={n} pages={pages} seconds={:.6}",
        start.elapsed().as_secs_f64()
    ));
}

fn split_churn(n: usize) {
    let start = Instant::now();
    for _ in 0..n {
        let p = map(3, RW, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS);
        // SAFETY: inside the fresh mapping.
        unsafe {
            p.write_volatile(1);
            unmap(p.add(PAGE), 1).expect("hole");
            unmap(p, 1).expect("head");
            unmap(p.add(2 * PAGE), 1).expect("tail");
        }
    }
    say(&format!(
        "split-churn iterations={n} seconds={:.6}",
        start.elapsed().as_secs_f64()
    ));
}

fn fork_child() {
    // SAFETY: the child only makes raw syscalls and exits with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let p = map(3, RW, PRIVATE);
        unsafe {
            unmap(p.add(PAGE), 1).expect("hole");
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for the child just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    say(&format!("fork child={pid}"));
}

/// A SPLIT made two calls below a function with a name to look for.
#[inline(never)]
fn punch_hole_in_named_function() {
    let p = map(3, RW, PRIVATE);
    // SAFETY: inside the fresh mapping.
    unmap_one_page(unsafe { p.add(PAGE) });
    std::hint::black_box(p);
}

/// glibc's munmap is a leaf without a frame: a frame-pointer walk from the
/// syscall goes from it straight to this function's caller.
#[inline(never)]
fn unmap_one_page(page: *mut u8) {
    unmap(page, 1).expect("hole");
    std::hint::black_box(page);
}

/// A cut in a file mapping, a cut in an anonymous one, brk and the stack:
/// a tracer names each mapping. Reports the addresses it used.
fn cut_each_kind_of_mapping() {
    let exe = std::ffi::CString::new("/proc/self/exe").expect("no NUL");
    // SAFETY: opening, mapping and closing a file the process can read.
    let file = unsafe {
        let fd = libc::open(exe.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        assert!(fd >= 0, "open: {}", std::io::Error::last_os_error());
        let p = libc::mmap(
            ptr::null_mut(),
            3 * PAGE,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        libc::close(fd);
        p.cast::<u8>()
    };
    // SAFETY: the middle page of the file mapping just made.
    unmap(unsafe { file.add(PAGE) }, 1).expect("file hole");
    let anon = map(3, RW, PRIVATE);
    // SAFETY: the middle page of the anonymous mapping just made.
    unmap(unsafe { anon.add(PAGE) }, 1).expect("anon hole");
    // SAFETY: sbrk moves the break; grown then given back at once.
    let heap = unsafe {
        let before = libc::sbrk(0);
        libc::sbrk(16 * PAGE as libc::intptr_t);
        libc::sbrk(-(16 * PAGE as libc::intptr_t));
        before
    };
    let local = 0u8;
    let stack_page = (&local as *const u8 as usize) & !(PAGE - 1);
    // SAFETY: the stack page is already read-write: nothing changes.
    unsafe { libc::mprotect(stack_page as *mut c_void, PAGE, RW) };
    say(&format!(
        "mappings file={} anon={} heap={} stack={}",
        file as usize, anon as usize, heap as usize, stack_page
    ));
}

fn mmap_pairs(n: usize) {
    for _ in 0..n {
        let p = map(1, RW, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS);
        unmap(p, 1).expect("unmap");
    }
    say(&format!("mmap pairs={n}"));
}

/// An mmap that fails with ENOMEM for lack of address space, far below the
/// VMA limit: RLIMIT_AS lowered to 64 MiB above what the process uses, then
/// a 1 GiB mapping asked for.
fn map_beyond_rlimit_as() {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let vm_size_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize");
    let limit = (vm_size_kib * 1024 + (64 << 20)) as libc::rlim_t;
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit reads a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) }, 0);
    let pages = (1 << 30) / PAGE;
    // SAFETY: an anonymous mapping at an address of the kernel's choosing.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            pages * PAGE,
            RW,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_eq!(p, libc::MAP_FAILED, "RLIMIT_AS did not stop a 1 GiB mmap");
    say(&format!("nomem errno={}", std::io::Error::last_os_error()));
}

/// The thread of `outside --with-thread`: it only exists.
extern "C" fn sleeper(_: *mut c_void) -> *mut c_void {
    while START.load(Ordering::Acquire) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    ptr::null_mut()
}

/// A region of 2n+1 pages whose odd pages are changed one at a time by
/// `change` (each cuts the page out: +2 VMAs); how many changes succeeded.
fn change_every_other_page(n: usize, mut change: impl FnMut(*mut u8) -> bool) -> usize {
    let region = map(2 * n + 1, RW, PRIVATE);
    let mut done = 0;
    for k in 0..n {
        // SAFETY: within the region mapped above.
        if change(unsafe { region.add((2 * k + 1) * PAGE) }) {
            done += 1;
        }
    }
    done
}

/// Where a test puts a uprobe (`probe-point`). Its first instruction is
/// one the kernel cannot emulate (it does push, nop and branches), so a hit
/// steps it out of line, in the [uprobes] page it maps then.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub extern "C" fn workload_probe_point(x: u64) -> u64 {
    core::arch::naked_asm!("lea rax, [rdi + 1]", "ret")
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn workload_probe_point(x: u64) -> u64 {
    std::hint::black_box(x) + 1
}

/// See the module doc: `probe-point`.
fn hit_the_probe_point(with_thread: bool) {
    let mut thread = 0 as libc::pthread_t;
    if with_thread {
        // SAFETY: sleeper has the pthread start signature.
        let rc =
            unsafe { libc::pthread_create(&mut thread, ptr::null(), sleeper, ptr::null_mut()) };
        assert_eq!(rc, 0);
        std::thread::sleep(std::time::Duration::from_millis(1000));
    }
    marker();
    let value = workload_probe_point(std::hint::black_box(41));
    marker();
    START.store(1, Ordering::Release);
    if with_thread {
        // SAFETY: joining the thread created above, once.
        unsafe { libc::pthread_join(thread, ptr::null_mut()) };
    }
    say(&format!("probe-point hit={value}"));
}

/// The child of `shared-vm`: in the parent's address space.
extern "C" fn shared_vm_child(_: *mut c_void) -> i32 {
    let region = map(3, RW, PRIVATE);
    // SAFETY: the middle page of the mapping made above.
    let hole = unmap(unsafe { region.add(PAGE) }, 1);
    i32::from(hole.is_err())
}

/// See the module doc: `shared-vm`.
fn change_from_a_process_sharing_the_address_space() {
    let mut thread = 0 as libc::pthread_t;
    // SAFETY: sleeper has the pthread start signature.
    let rc = unsafe { libc::pthread_create(&mut thread, ptr::null(), sleeper, ptr::null_mut()) };
    assert_eq!(rc, 0);
    // A tracer that learns of the thread may prepare for it first.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    marker();
    let stack = map(16, RW, PRIVATE);
    // SAFETY: the child runs on its own stack (the top of `stack`) in our
    // address space and touches only what it maps itself.
    let child = unsafe {
        libc::clone(
            shared_vm_child,
            stack.add(16 * PAGE).cast(),
            libc::CLONE_VM | libc::SIGCHLD,
            ptr::null_mut(),
        )
    };
    assert!(child > 0, "clone: {}", std::io::Error::last_os_error());
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    assert_eq!(status, 0, "the child's calls failed");
    START.store(1, Ordering::Release);
    // SAFETY: joining the thread created above, once.
    unsafe { libc::pthread_join(thread, ptr::null_mut()) };
    say(&format!("shared-vm child={child}"));
}

/// See the module doc: `outside`.
fn change_outside_the_mapping_calls(n: usize, settle_ms: usize, with_thread: bool) {
    let mut thread = 0 as libc::pthread_t;
    if with_thread {
        // SAFETY: sleeper has the pthread start signature.
        let rc =
            unsafe { libc::pthread_create(&mut thread, ptr::null(), sleeper, ptr::null_mut()) };
        assert_eq!(rc, 0);
    }
    // A tracer that learns of the thread may prepare for it first.
    std::thread::sleep(std::time::Duration::from_millis(settle_ms as u64));
    marker();
    // Node 0 always exists.
    let nodemask: u64 = 1;
    let mbinds = change_every_other_page(n, |page| {
        // SAFETY: mbind on a page of our own, with a valid node mask.
        unsafe {
            libc::syscall(
                libc::SYS_mbind,
                page,
                PAGE,
                2, /* MPOL_BIND */
                &nodemask,
                64,
                0,
            ) == 0
        }
    });
    // SAFETY: userfaultfd returns a new descriptor (root may use it).
    let uffd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) } as i32;
    assert!(
        uffd >= 0,
        "userfaultfd: {}",
        std::io::Error::last_os_error()
    );
    let mut api = [0xaa_u64, 0, 0];
    // SAFETY: UFFDIO_API with a valid struct uffdio_api.
    assert_eq!(
        unsafe { libc::ioctl(uffd, 0xc018_aa3f, api.as_mut_ptr()) },
        0
    );
    let registered = change_every_other_page(n, |page| {
        // struct uffdio_register: range (start, len), mode (MISSING), ioctls.
        let mut register = [page as u64, PAGE as u64, 1, 0];
        // SAFETY: UFFDIO_REGISTER with a valid struct, on our own page.
        unsafe { libc::ioctl(uffd, 0xc020_aa00, register.as_mut_ptr()) == 0 }
    });
    let named = change_every_other_page(n / 5, |page| {
        // SAFETY: naming a page of our own with a NUL-terminated name.
        unsafe {
            libc::prctl(
                0x5356_4d41,
                0,
                page as u64,
                PAGE as u64,
                c"outside".as_ptr() as u64,
            ) == 0
        }
    });
    let mut contexts = [0u64; 16];
    for context in contexts.iter_mut() {
        // SAFETY: io_setup writes the new context to a zeroed u64.
        assert_eq!(
            unsafe { libc::syscall(libc::SYS_io_setup, 1, context as *mut u64) },
            0
        );
    }
    for context in &contexts[..8] {
        // SAFETY: destroying contexts made above, once each.
        assert_eq!(unsafe { libc::syscall(libc::SYS_io_destroy, *context) }, 0);
    }
    // Unregisters every range: they merge back with their neighbours.
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(uffd) };
    START.store(1, Ordering::Release);
    if with_thread {
        // SAFETY: joining the thread created above, once.
        unsafe { libc::pthread_join(thread, ptr::null_mut()) };
    }
    say(&format!(
        "outside mbind={mbinds} registered={registered} named={named} aio_setup=16 aio_destroy=8"
    ));
}

/// `count` pages mapped read-write with an unmapped page on each side, so
/// no neighbour touches them; the first of them.
fn map_apart(count: usize) -> *mut u8 {
    let region = map(count + 2, RW, PRIVATE);
    // SAFETY: both ends lie within the region just mapped.
    unsafe {
        unmap(region, 1).expect("unmap the low end");
        unmap(region.add((count + 1) * PAGE), 1).expect("unmap the high end");
        region.add(PAGE)
    }
}

/// See the module doc: `anatomy`.
fn make_a_known_layout(holes: usize, patches: usize, threads: usize, files: usize, dir: &str) {
    let patchwork = map_apart(2 * patches + 1);
    for k in 0..patches {
        // SAFETY: the odd pages of the region just mapped.
        let page = unsafe { patchwork.add((2 * k + 1) * PAGE) };
        // SAFETY: a page of our own.
        assert_eq!(
            unsafe { libc::mprotect(page.cast(), PAGE, libc::PROT_READ) },
            0
        );
    }
    let policy = map_apart(3);
    let nodemask: u64 = 1;
    // SAFETY: mbind of a page of our own to node 0, which always exists.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            policy.add(PAGE),
            PAGE,
            2, /* MPOL_BIND */
            &nodemask,
            64,
            0,
        )
    };
    assert_eq!(rc, 0, "mbind: {}", std::io::Error::last_os_error());
    let locked = map_apart(3);
    // SAFETY: a page of our own.
    let rc = unsafe { libc::mlock(locked.add(PAGE).cast(), PAGE) };
    assert_eq!(rc, 0, "mlock: {}", std::io::Error::last_os_error());
    for _ in 0..threads {
        let mut thread = 0 as libc::pthread_t;
        // SAFETY: sleeper has the pthread start signature.
        let rc =
            unsafe { libc::pthread_create(&mut thread, ptr::null(), sleeper, ptr::null_mut()) };
        assert_eq!(rc, 0);
    }
    for k in 0..files {
        let path = format!("{dir}/index-{k:05}.idx");
        std::fs::write(&path, [0u8; PAGE]).expect("write a file to map");
        let file = std::fs::File::open(&path).expect("open the file");
        use std::os::fd::AsRawFd;
        // SAFETY: a read-only shared mapping of a file of one page.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                PAGE,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
    }
    // Last: a later mapping of a page would fill a hole.
    let pieces = map_apart(2 * holes - 1);
    for k in 0..holes - 1 {
        // SAFETY: the odd pages of the region just mapped.
        unmap(unsafe { pieces.add((2 * k + 1) * PAGE) }, 1).expect("punch a hole");
    }
    say(&format!(
        "anatomy holes={holes} holes_at={:#x} patchwork_at={:#x} policy_at={:#x} locked_at={:#x} threads={threads} files={files}",
        pieces as usize, patchwork as usize, policy as usize, locked as usize
    ));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wait = args.iter().any(|a| a == "--wait");
    let pause = args.iter().any(|a| a == "--pause");
    let linger = args.iter().any(|a| a == "--linger");
    let hold_threads = args.iter().any(|a| a == "--hold-threads");
    let with_thread = args.iter().any(|a| a == "--with-thread");
    let args: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let number = |i: usize, default: usize| -> usize {
        args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    say(&format!("ready pid={}", std::process::id()));
    if wait {
        wait_for_line();
    }
    marker();
    match args.first().copied().unwrap_or("") {
        "incident" => incident(number(1, 2 * max_map_count())),
        "malloc" => malloc_blocks(number(1, 200)),
        "threads" => threads(number(1, 4), number(2, 500), number(3, 0), hold_threads),
        "churn" => churn(number(1, 100_000), number(2, 4)),
        "split-churn" => split_churn(number(1, 100_000)),
        "fork" => fork_child(),
        "named-split" => punch_hole_in_named_function(),
        "mmap" => mmap_pairs(number(1, 100)),
        "mappings" => cut_each_kind_of_mapping(),
        "nomem" => map_beyond_rlimit_as(),
        "shared-vm" => change_from_a_process_sharing_the_address_space(),
        "probe-point" => hit_the_probe_point(with_thread),
        "outside" => change_outside_the_mapping_calls(number(1, 500), number(2, 1000), with_thread),
        "anatomy" => make_a_known_layout(
            number(1, 100),
            number(2, 10),
            number(3, 4),
            number(4, 10),
            args.get(5).copied().unwrap_or("/tmp"),
        ),
        other => {
            say(&format!("unknown mode {other:?}"));
            std::process::exit(2);
        }
    }
    marker();
    if pause {
        say(&format!("paused pid={}", std::process::id()));
        wait_for_line();
    }
    if linger {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
