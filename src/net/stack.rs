//! Handing back the stack pages a pooled worker touched deep down but no longer uses.
//!
//! Touched stack pages stay resident for the thread's life, and pool threads live long.
//! A few calls run pages deeper than a handshake does (glibc's name lookup above all),
//! so a worker that once made one would carry those pages into every idle session it
//! later relays. Once a worker's relay has waited a while for its client (the relay's
//! `STACK_SETTLE`), [`release_unused`] looks whether the page just below its frame is
//! resident (mincore), and only then gives back every page below with
//! madvise(MADV_DONTNEED), as glibc does for the stack of a thread that exits. A page
//! needed again comes back as a fresh zeroed page on first touch.
//!
//! Only for a session that waits, and only when a page is there: the madvise flushes the
//! TLB of every CPU running one of our threads (an interrupt to each), and the next
//! handshake faults the page back in. Run by every session, perf put 13% of a short
//! session's CPU in that release.
//!
//! Only threads that called [`remember_this_thread`] (the pools' threads) release
//! anything; elsewhere (the main thread, whose stack grows on demand, or other systems)
//! both are no-ops.
#![allow(unsafe_code)] // pthread_getattr_np, mincore and madvise have no safe wrapper

#[cfg(target_os = "linux")]
mod imp {
    use std::cell::Cell;
    use std::ptr;

    /// Bytes kept below this frame for the frames of the mincore and madvise calls,
    /// more than the 128-byte red zone a leaf function may use below its stack pointer.
    const CALL_ROOM: usize = 512;

    thread_local! {
        /// The lowest usable address of this thread's stack; 0 when not known.
        static STACK_BOTTOM: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn remember_this_thread() {
        STACK_BOTTOM.with(|bottom| bottom.set(stack_bottom().unwrap_or(0)));
    }

    pub(super) fn stack_bottom() -> Option<usize> {
        // SAFETY: pthread_attr_t is plain data that pthread_getattr_np fills in; it is
        // destroyed exactly once, after pthread_attr_getstack wrote into two locals.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                return None;
            }
            let (mut addr, mut size) = (ptr::null_mut(), 0);
            let got = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
            libc::pthread_attr_destroy(&mut attr);
            (got == 0 && !addr.is_null()).then_some(addr as usize)
        }
    }

    #[inline(never)]
    pub(super) fn release_unused() {
        let bottom = STACK_BOTTOM.with(Cell::get);
        if bottom == 0 {
            return;
        }
        let here = 0u8;
        let frame = std::hint::black_box(ptr::addr_of!(here)) as usize;
        // SAFETY: sysconf only reads a constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let end = frame.saturating_sub(CALL_ROOM) & !(page - 1);
        if end <= bottom || !is_resident(end - page, page) {
            return;
        }
        // SAFETY: [bottom, end) lies inside this thread's own stack mapping and wholly
        // below the live frames (the caller's and this one's, with room for the call):
        // no object lives there, so its contents may be discarded. The stack mapping is
        // private and anonymous, so the pages read as zeros if touched again.
        unsafe {
            libc::madvise(bottom as *mut libc::c_void, end - bottom, libc::MADV_DONTNEED);
        }
    }

    /// Whether the page at `page_start` is in memory. The stack grows one page after
    /// another, so when the page just below the caller's is not, none further down is.
    fn is_resident(page_start: usize, page: usize) -> bool {
        let mut status = 0u8;
        // SAFETY: the range is one page of this thread's own stack mapping, page-aligned;
        // mincore writes one status byte per page into `status`, a live local.
        let looked = unsafe { libc::mincore(page_start as *mut libc::c_void, page, &mut status) };
        looked != 0 || status & 1 == 1
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn remember_this_thread() {}
    #[cfg(not(windows))]
    pub(super) fn release_unused() {}
}

/// Records the current thread's stack bounds, once, so that [`release_unused`] may
/// work on this thread. Pool threads call it when they start.
pub(crate) fn remember_this_thread() {
    imp::remember_this_thread()
}

/// Gives back the resident stack pages below the caller's frame, if there are any. Not on
/// Windows, whose relay never waits in a blocking read (see `relay`).
#[cfg(not(windows))]
pub(crate) fn release_unused() {
    imp::release_unused()
}

/// What tests elsewhere need to watch a thread's stack: its bounds, a deep call, and how
/// much of it is resident.
#[cfg(all(test, target_os = "linux"))]
pub(crate) mod probe {
    /// The lowest usable address of the calling thread's stack.
    pub(crate) fn bottom() -> usize {
        super::imp::stack_bottom().expect("this thread's stack bounds")
    }

    /// The address of a local in the caller's frame, page-aligned down.
    #[inline(never)]
    pub(crate) fn frame() -> usize {
        let here = 0u8;
        std::hint::black_box(std::ptr::addr_of!(here)) as usize & !(page() - 1)
    }

    fn page() -> usize {
        // SAFETY: sysconf only reads a constant.
        usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap()
    }

    /// Touches 64 KiB of stack below the caller's frame.
    #[inline(never)]
    pub(crate) fn go_deep() -> u8 {
        let mut deep = [1u8; 64 * 1024];
        std::hint::black_box(&mut deep);
        deep[deep.len() - 1]
    }

    /// Resident KiB of `[from, to)`, page by page with mincore. Any thread's stack may be
    /// looked at. Not the Rss of the mapping that holds the stack: the kernel may merge a
    /// thread's stack with a neighbouring anonymous mapping (seen with musl, whose thread
    /// stacks sit beside other anonymous memory), whose pages that Rss would count too.
    pub(crate) fn resident_kib(from: usize, to: usize) -> usize {
        let page = page();
        let mut status = vec![0u8; (to - from) / page];
        // SAFETY: [from, to) is page-aligned and inside a thread's stack mapping; mincore
        // writes one byte per page of it into `status`, which has that many.
        let looked = unsafe { libc::mincore(from as *mut libc::c_void, to - from, status.as_mut_ptr()) };
        assert_eq!(looked, 0, "mincore: {}", std::io::Error::last_os_error());
        status.iter().filter(|&&s| s & 1 == 1).count() * page / 1024
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::probe::{bottom, frame, go_deep, resident_kib};
    use super::*;

    /// Resident KiB of the calling thread's stack below its caller's frame.
    #[inline(never)]
    fn resident_below_kib() -> usize {
        resident_kib(bottom(), frame())
    }

    #[test]
    fn pages_touched_deep_below_are_given_back() {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                remember_this_thread();
                go_deep();
                let deep = resident_below_kib();
                release_unused();
                let released = resident_below_kib();
                assert!(deep >= 64, "the deep call touched {deep} KiB");
                assert!(released <= 16, "{released} KiB still resident after release ({deep} KiB before)");
                // The stack still works, below where it was released too.
                assert_eq!(go_deep(), 1);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn threads_that_did_not_remember_keep_their_pages() {
        std::thread::spawn(|| {
            go_deep();
            let deep = resident_below_kib();
            release_unused();
            assert!(deep >= 64, "the deep call touched {deep} KiB");
            assert_eq!(resident_below_kib(), deep);
        })
        .join()
        .unwrap();
    }
}
