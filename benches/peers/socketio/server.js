/**
 * Socket.IO v4 (Node) peer server for the Switchboard load benchmarks.
 *
 * - Socket.IO at /socket.io/, websocket transport only. The handshake auth
 *   {"user": "<id>", "location": "<loc>"} joins rooms `user:<id>` and `loc:<loc>`.
 * - POST /emit {"rooms": [...], "event": "...", "data": <any>}
 *   -> io.to(rooms).emit(event, data), answers {"ok":true}.
 * - GET /healthz -> 200.
 *
 * With REDIS_URL set, rooms span processes through @socket.io/redis-adapter
 * (node-redis v4 pub + sub clients); otherwise the default in-memory adapter.
 * Port: first argument or PORT. Usage: node server.js PORT
 */
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || process.env.PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error("usage: node server.js PORT (or env PORT)");
  process.exit(2);
}

function reply(res, status, body) {
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

// Plain http handler; Socket.IO intercepts /socket.io/ and passes everything else here.
const httpServer = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/healthz") return reply(res, 200, '{"ok":true}');
  if (req.method !== "POST" || req.url !== "/emit") return reply(res, 404, '{"error":"not found"}');
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let msg;
    try {
      msg = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      return reply(res, 400, '{"error":"bad json"}');
    }
    if (!Array.isArray(msg.rooms) || typeof msg.event !== "string") {
      return reply(res, 400, '{"error":"need rooms[] and event"}');
    }
    io.to(msg.rooms).emit(msg.event, msg.data);
    reply(res, 200, '{"ok":true}');
  });
});

const io = new Server(httpServer, {
  transports: ["websocket"],
  serveClient: false,
});

// Documented memory tuning: drop the handshake request once the socket is open.
io.engine.on("connection", (rawSocket) => {
  rawSocket.request = null;
});

io.on("connection", (socket) => {
  const auth = socket.handshake.auth || {};
  const rooms = [];
  if (auth.user != null) rooms.push(`user:${auth.user}`);
  if (auth.location != null) rooms.push(`loc:${auth.location}`);
  if (rooms.length) socket.join(rooms);
});

async function main() {
  if (process.env.REDIS_URL) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: process.env.REDIS_URL });
    const sub = pub.duplicate();
    for (const c of [pub, sub]) c.on("error", (e) => console.error("redis:", e.message));
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub));
  }
  httpServer.listen({ port, host: "127.0.0.1", backlog: 4096 }, () => {
    console.log(`listening on 127.0.0.1:${port}`);
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
