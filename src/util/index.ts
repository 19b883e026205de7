// Small helpers every layer shares, one of each: cancellation, in-flight limits, deferred
// promises, process liveness and error inspection. No domain knowledge lives here.
export { untilAborted, waitOrAbort } from './abort.ts';
export { deferred, type Deferred } from './deferred.ts';
export { isErrno, isRecord, messageOf } from './errors.ts';
export { InFlightLimit } from './limit.ts';
export { awaitedLater } from './promises.ts';
export { processAlive, processStart, recordedProcessAlive } from './process.ts';
export { canMakeNodes, makeNode, nativeFsAvailable, setTimesNs } from './native-fs.ts';
export { readRegularFile } from './regular-file.ts';
