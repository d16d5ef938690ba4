// The Node one of the interception tests' unmodified clients: @grpc/grpc-js from npm (found
// through NODE_PATH, .tools/node_modules). Arguments and output are those of the grpc-go client
// (main.go); messages move as raw Buffers, so no generated code is needed, and the proxy
// variables, when set, are honoured by grpc-js itself.
'use strict';
const grpc = require('@grpc/grpc-js');

function call(client, kind, method, req) {
  return new Promise((resolve) => {
    const id = (md) => (md.get('restate-invocation-id')[0] || '-');
    const fail = (err) => resolve(`ERR ${err.code} ${String(err.details).replace(/\n/g, ' ')}`);
    const options = { deadline: Date.now() + 20000 };
    const raw = (b) => b;
    let header = new grpc.Metadata();
    if (kind === 'unary') {
      const c = client.makeUnaryRequest(method, raw, raw, req, new grpc.Metadata(), options, (err, resp) => {
        if (err) return fail(err);
        resolve(`OK ${id(header)} ${resp.toString('hex')}`);
      });
      c.on('metadata', (md) => { header = md; });
      return;
    }
    const s = client.makeServerStreamRequest(method, raw, raw, req, new grpc.Metadata(), options);
    const resps = [];
    s.on('metadata', (md) => { header = md; });
    s.on('data', (b) => resps.push(b.toString('hex')));
    s.on('error', fail);
    s.on('status', (st) => {
      if (st.code === grpc.status.OK) resolve(`OK ${id(header)} ${resps.join(',')}`);
    });
  });
}

async function main() {
  const [target, ...ops] = process.argv.slice(2);
  if (!target || ops.length === 0) {
    console.error('usage: client.js TARGET unary|stream:/pkg.Svc/Method:HEX ...');
    process.exit(2);
  }
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  for (const op of ops) {
    const i = op.indexOf(':');
    const j = op.lastIndexOf(':');
    console.log(await call(client, op.slice(0, i), op.slice(i + 1, j), Buffer.from(op.slice(j + 1), 'hex')));
  }
  client.close();
}

main();
