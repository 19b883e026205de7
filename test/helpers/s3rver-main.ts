// Runs s3rver for tests in its own process: node --openssl-legacy-provider --import tsx s3rver-main.ts DIR BUCKET.
// s3rver's ListObjectsV2 continuation tokens use DES, which OpenSSL 3 only has in its legacy
// provider. Prints {"port":N} when ready; exits when its stdin closes (the test process is gone).
import process from 'node:process';
import S3rver from 's3rver';

const [directory, bucket] = process.argv.slice(2);
if (directory === undefined || bucket === undefined) throw new Error('usage: s3rver-main.ts DIR BUCKET');
const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  silent: true,
  directory,
  configureBuckets: [{ name: bucket, configs: [] }],
});
const { port } = await server.run();
process.stdout.write(`${JSON.stringify({ port })}\n`);
const stop = (): void => {
  server.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.stdin.on('end', stop);
process.stdin.resume();
process.on('SIGTERM', stop);
