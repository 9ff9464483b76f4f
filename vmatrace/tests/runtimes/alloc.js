// Allocates buffers from two named functions, as a Node service filling a
// cache does (a test workload of vmatrace): 256 KiB each, above glibc's
// mmap threshold, so each is an mmap of its own. Says "allocated pid=N"
// on stderr and waits for a line on stdin before it exits.
function makeBuffers(n) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(Buffer.alloc(256 * 1024));
  return out;
}

function fillCache(n) {
  return makeBuffers(n);
}

const kept = fillCache(20);
process.stderr.write(`allocated pid=${process.pid} buffers=${kept.length}\n`);
process.stdin.once('data', () => process.exit(0));
