'use strict'
// A Kubernetes-style streaming client built on spdy-transport (the SPDY implementation of
// node's `spdy` package), used by tests/e2e/streaming.rs to check wasmcri's SPDY/3.1 server
// against an implementation nobody on wasmcri wrote.
//
//   node client.js exec <url> <protocol> <stdin text or "-" for none>
//   node client.js attach <url> <protocol> <stdin text or "-" for none>
//   node client.js portforward <url> <port> <payload>
//
// Prints one JSON object: what arrived on each stream and the HTTP status line.

const net = require('net')
const transport = require('spdy-transport')

function upgrade (url, protocol) {
  return new Promise((resolve, reject) => {
    const u = new URL(url)
    const sock = net.connect(Number(u.port), u.hostname)
    let buf = Buffer.alloc(0)
    const onData = (d) => {
      buf = Buffer.concat([buf, d])
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) return
      sock.removeListener('data', onData)
      sock.pause()
      const head = buf.slice(0, end).toString()
      const rest = buf.slice(end + 4)
      if (rest.length) sock.unshift(rest)
      resolve({ sock, head })
    }
    sock.on('data', onData)
    sock.on('error', reject)
    sock.write(`POST ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\n` +
      'Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n' +
      `X-Stream-Protocol-Version: ${protocol}\r\nContent-Length: 0\r\n\r\n`)
  })
}

function collect (stream) {
  return new Promise((resolve) => {
    const chunks = []
    stream.on('data', (d) => chunks.push(d))
    stream.on('end', () => resolve(Buffer.concat(chunks).toString()))
    // A session that ends with the stream still open (an attach whose container exits)
    // closes it without an end.
    stream.on('close', () => resolve(Buffer.concat(chunks).toString()))
    stream.on('error', (e) => resolve('STREAM ERROR: ' + e.message))
  })
}

async function main () {
  const [mode, url, a, b] = process.argv.slice(2)
  const protocol = mode === 'portforward' ? 'portforward.k8s.io' : a
  const { sock, head } = await upgrade(url, protocol)
  const status = head.split('\r\n')[0]
  const out = { status }
  if (!/ 101 /.test(status)) {
    console.log(JSON.stringify({ status }))
    sock.destroy()
    return
  }
  const conn = transport.connection.create(sock, { protocol: 'spdy', isServer: false })
  conn.on('error', (e) => { out.connError = e.message })
  sock.on('error', (e) => { out.sockError = e.message })
  conn.start(3.1)
  // The server answers PING (before the session's work, which ends it).
  await new Promise((resolve) => conn.ping(resolve))
  out.pinged = true
  const open = (headers) => conn.request({ method: 'POST', path: '/', host: 'localhost', headers })
  if (mode === 'exec' || mode === 'attach') {
    const input = b
    const error = open({ streamtype: 'error' })
    const stdin = input !== '-' ? open({ streamtype: 'stdin' }) : null
    const stdout = open({ streamtype: 'stdout' })
    const stderr = open({ streamtype: 'stderr' })
    const parts = [collect(error), collect(stdout), collect(stderr)]
    if (stdin && mode === 'attach') {
      // An attach sends what a user typed, once.
      stdin.write(input)
      stdin.end()
    } else if (stdin) {
      // More than one default window (64 KiB), so flow control is exercised both ways.
      stdin.write(input.repeat(Math.ceil(100000 / input.length)).slice(0, 100000))
      stdin.end()
    }
    const [err, so, se] = await Promise.all(parts)
    Object.assign(out, { error: err, stdout: so, stderr: se })
  } else {
    const port = a
    const error = open({ streamtype: 'error', port, requestid: '0' })
    const data = open({ streamtype: 'data', port, requestid: '0' })
    const got = collect(data)
    const errText = collect(error)
    data.write(b)
    data.end()
    const [d, e] = await Promise.all([got, errText])
    Object.assign(out, { data: d, error: e })
  }
  console.log(JSON.stringify(out))
  conn.end()
  sock.destroy()
}

main().catch((e) => {
  console.log(JSON.stringify({ failure: e.stack }))
  process.exit(1)
})
