// A stand-in bcryptprimitives.dll for running burrowd's Windows build under Wine older than
// 8.13 (Debian 12 ships 8.0), for the tests only: Rust 1.78 and later take random bytes
// from ProcessPrng, which Windows 10 has and those Wine versions lack, so the exe would not
// start. It forwards to RtlGenRandom, which every Wine has. Never shipped with burrowd.
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length); // RtlGenRandom

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
