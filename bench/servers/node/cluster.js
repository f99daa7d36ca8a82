// Node `cluster` server: the model of the original Node clusterflock. The
// primary accepts every connection and hands it to a worker (the default
// round-robin scheduling on Linux); workers answer "ok" with an X-Pid header.
// A worker that exits is re-forked, unless the primary is stopping.
//   BENCH_ADDR     host:port to listen on (default 127.0.0.1:8080)
//   BENCH_WORKERS  number of workers (default 2)
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

const [host, port] = (process.env.BENCH_ADDR || '127.0.0.1:8080').split(':');
const workers = parseInt(process.env.BENCH_WORKERS || '2', 10);

if (cluster.isPrimary) {
  let stopping = false;
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', () => { if (!stopping) cluster.fork(); });
  const stop = () => {
    stopping = true;
    for (const id in cluster.workers) cluster.workers[id].process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 1000).unref();
    cluster.on('exit', () => { if (Object.keys(cluster.workers).length === 0) process.exit(0); });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const pid = String(process.pid);
  http.createServer((req, res) => {
    res.writeHead(200, { 'X-Pid': pid, 'Content-Type': 'text/plain', 'Content-Length': '2' });
    res.end('ok');
  }).listen(parseInt(port, 10), host);
}
