//! Sorted runs for atomic bulk loads.
//!
//! Each batch of an atomic bulk load writes, per column family, its entries sorted into a run
//! file instead of an SST file. When the load commits, each column family's runs are merged into
//! SST files that do not overlap one another, and those are ingested. RocksDB places a file that
//! overlaps nothing in the lowest level, so a store filled this way starts with its data already
//! compacted; SST files from every batch would all overlap (keys are term hashes, spread over the
//! whole key space), land in level 0, hold writes back until compactions merged them, and make
//! every read look into each of them meanwhile.
//!
//! A run is a sequence of entries, each `shared` (bytes of the key shared with the previous key),
//! the rest of the key, and the value, with varint lengths: consecutive sorted keys share their
//! first terms, which this does not write again.

use crate::storage::error::StorageError;
use crate::storage::rocksdb_wrapper::{ColumnFamily, Db, SstFileWriter};
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::{File, remove_file};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Buffer of each run's reader and writer.
const IO_BUFFER: usize = 256 * 1024;
/// Raw bytes (keys and values) after which a merge starts a new SST file.
const SST_FILE_BYTES: usize = 64 * 1024 * 1024;

/// Writes a run: entries must come in strictly increasing key order.
pub struct RunWriter {
    out: BufWriter<File>,
    path: PathBuf,
    previous: Vec<u8>,
}

impl RunWriter {
    pub fn create(path: PathBuf) -> Result<Self, StorageError> {
        Ok(Self { out: BufWriter::with_capacity(IO_BUFFER, File::create(&path)?), path, previous: Vec::new() })
    }

    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let shared = key.iter().zip(&self.previous).take_while(|(a, b)| a == b).count();
        write_varint(&mut self.out, shared)?;
        write_varint(&mut self.out, key.len() - shared)?;
        self.out.write_all(&key[shared..])?;
        write_varint(&mut self.out, value.len())?;
        self.out.write_all(value)?;
        self.previous.clear();
        self.previous.extend_from_slice(key);
        Ok(())
    }

    pub fn finish(mut self) -> Result<PathBuf, StorageError> {
        self.out.flush()?;
        Ok(self.path)
    }
}

/// Reads a run back, one entry at a time.
struct RunReader {
    input: BufReader<File>,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl RunReader {
    fn open(path: &Path) -> Result<Self, StorageError> {
        Ok(Self { input: BufReader::with_capacity(IO_BUFFER, File::open(path)?), key: Vec::new(), value: Vec::new() })
    }

    /// Moves to the next entry; false at the end of the run.
    fn advance(&mut self) -> Result<bool, StorageError> {
        let Some(shared) = read_varint(&mut self.input, true)? else {
            return Ok(false);
        };
        if shared > self.key.len() {
            return Err(corrupted("a key shares more bytes than the previous key has"));
        }
        self.key.truncate(shared);
        let rest = read_len(&mut self.input)?;
        read_onto(&mut self.input, &mut self.key, rest)?;
        let value = read_len(&mut self.input)?;
        self.value.clear();
        read_onto(&mut self.input, &mut self.value, value)?;
        Ok(true)
    }
}

/// A run in the merge's heap, ordered by its current key (then by run, so that the order is
/// total).
struct Head {
    run: usize,
    reader: RunReader,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        self.reader.key.cmp(&other.reader.key).then(self.run.cmp(&other.run))
    }
}

/// Merges `runs` (of one column family) into SST files that do not overlap one another, each
/// key once (the first run's value when runs repeat a key: a key's value is determined by the
/// key in every column family), and removes the runs. Returns the SST files, in key order.
pub fn merge_runs(
    db: &Db,
    column_family: &ColumnFamily,
    runs: &[PathBuf],
) -> Result<Vec<PathBuf>, StorageError> {
    let mut files = Vec::new();
    if let Err(e) = merge_into(db, column_family, runs, &mut files) {
        for file in files {
            remove_file(file).ok();
        }
        return Err(e);
    }
    for run in runs {
        remove_file(run)?;
    }
    Ok(files)
}

/// [`merge_runs`], adding each SST file to `files` as soon as it is created.
fn merge_into(
    db: &Db,
    column_family: &ColumnFamily,
    runs: &[PathBuf],
    files: &mut Vec<PathBuf>,
) -> Result<(), StorageError> {
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (run, path) in runs.iter().enumerate() {
        let mut reader = RunReader::open(path)?;
        if reader.advance()? {
            heap.push(Reverse(Head { run, reader }));
        }
    }
    let mut sst: Option<SstFileWriter> = None;
    let mut sst_bytes = 0;
    let mut last: Option<Vec<u8>> = None;
    while let Some(mut top) = heap.peek_mut() {
        let head = &mut top.0;
        if last.as_deref() != Some(head.reader.key.as_slice()) {
            if sst_bytes >= SST_FILE_BYTES {
                if let Some(full) = sst.take() {
                    full.finish()?;
                }
                sst_bytes = 0;
            }
            let writer = match &mut sst {
                Some(writer) => writer,
                None => {
                    let writer = db.new_sst_file(column_family)?;
                    files.push(writer.path().to_owned());
                    sst.insert(writer)
                }
            };
            writer.insert(&head.reader.key, &head.reader.value)?;
            sst_bytes += head.reader.key.len() + head.reader.value.len();
            match &mut last {
                Some(last) => {
                    last.clear();
                    last.extend_from_slice(&head.reader.key);
                }
                None => last = Some(head.reader.key.clone()),
            }
        }
        if !head.reader.advance()? {
            std::collections::binary_heap::PeekMut::pop(top);
        }
        // Otherwise dropping `top` moves the run to its place for its new key.
    }
    if let Some(writer) = sst {
        writer.finish()?;
    }
    Ok(())
}

fn corrupted(message: &str) -> StorageError {
    StorageError::Io(io::Error::new(io::ErrorKind::InvalidData, format!("bulk load run: {message}")))
}

fn write_varint(out: &mut impl Write, mut value: usize) -> io::Result<()> {
    while value >= 0x80 {
        out.write_all(&[(value as u8) | 0x80])?;
        value >>= 7;
    }
    out.write_all(&[value as u8])
}

/// Reads a varint; `None` at the end of the input when `at_entry_start` (a clean end).
fn read_varint(input: &mut impl Read, at_entry_start: bool) -> Result<Option<usize>, StorageError> {
    let mut value = 0usize;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8];
        if input.read(&mut byte)? == 0 {
            return if shift == 0 && at_entry_start { Ok(None) } else { Err(corrupted("truncated length")) };
        }
        value |= usize::from(byte[0] & 0x7F) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(corrupted("length too long"))
}

fn read_len(input: &mut impl Read) -> Result<usize, StorageError> {
    read_varint(input, false)?.ok_or_else(|| corrupted("truncated length"))
}

fn read_onto(input: &mut impl Read, buffer: &mut Vec<u8>, len: usize) -> Result<(), StorageError> {
    let start = buffer.len();
    buffer.resize(start + len, 0);
    input.read_exact(&mut buffer[start..]).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => corrupted("truncated entry"),
        _ => e.into(),
    })
}
