// The built-in SQLite writer: quiesces one database file by holding its write lock, and reads
// only changed blocks for incremental and differential backups through page-hash stamps.
export { createSqliteWriter, snapshotPathOf, type SqliteWriterOptions } from './sqlite-writer.ts';
