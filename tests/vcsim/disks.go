package main

// Disk content for warm migration: the base flat extent, the deltas kept while snapshots exist, the
// guest's view (base + deltas) and per-block records (a hash and a non-zero bit per 64 KiB block).

import (
	"bytes"
	"fmt"
	"hash/crc64"
	"io"
	"os"
	"sort"
)

const blockSize = 64 * 1024

var (
	crcTable  = crc64.MakeTable(crc64.ECMA)
	zeroBlock = make([]byte, blockSize)
)

// record: the content of a disk at one moment, block by block.
type record struct {
	hashes  []uint64
	nonzero []bool
}

// delta: what the guest wrote after one snapshot, at the offsets of the disk (a sparse raw file)
// plus the set of 64 KiB blocks it holds.
type delta struct {
	path  string
	dirty map[int64]bool
}

// diskFiles: where one disk's content lives now.
type diskFiles struct {
	base     string   // the -flat.vmdk extent in the datastore directory ("" when the disk has none)
	capacity int64    // bytes
	deltas   []*delta // oldest first; the last one takes the guest's writes
}

func blocks(capacity int64) int64 { return (capacity + blockSize - 1) / blockSize }

func blockLen(capacity, idx int64) int64 {
	n := capacity - idx*blockSize
	if n > blockSize {
		n = blockSize
	}
	return n
}

// readAtZero reads len(buf) bytes at off from path, zeros past its end (or when it does not exist).
func readAtZero(path string, buf []byte, off int64) error {
	for i := range buf {
		buf[i] = 0
	}
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.ReadAt(buf, off)
	if err == io.EOF {
		err = nil
	}
	return err
}

func writeAt(path string, buf []byte, off int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(buf, off)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readBlock: block idx as seen through the base and the first `layers` deltas.
func (d *diskFiles) readBlock(idx int64, layers int, buf []byte) error {
	buf = buf[:blockLen(d.capacity, idx)]
	for i := layers - 1; i >= 0; i-- {
		if d.deltas[i].dirty[idx] {
			return readAtZero(d.deltas[i].path, buf, idx*blockSize)
		}
	}
	return readAtZero(d.base, buf, idx*blockSize)
}

// record of the disk as seen through the base and the first `layers` deltas.
func (d *diskFiles) record(layers int) (*record, error) {
	n := blocks(d.capacity)
	r := &record{hashes: make([]uint64, n), nonzero: make([]bool, n)}
	buf := make([]byte, blockSize)
	for idx := int64(0); idx < n; idx++ {
		b := buf[:blockLen(d.capacity, idx)]
		if err := d.readBlock(idx, layers, b); err != nil {
			return nil, err
		}
		r.hashes[idx] = crc64.Checksum(b, crcTable)
		r.nonzero[idx] = !bytes.Equal(b, zeroBlock[:len(b)])
	}
	return r, nil
}

// read: the guest's view of [off, off+len(out)).
func (d *diskFiles) read(out []byte, off int64) error {
	buf := make([]byte, blockSize)
	for pos := off; pos < off+int64(len(out)); {
		idx := pos / blockSize
		b := buf[:blockLen(d.capacity, idx)]
		if err := d.readBlock(idx, len(d.deltas), b); err != nil {
			return err
		}
		n := copy(out[pos-off:], b[pos-idx*blockSize:])
		pos += int64(n)
	}
	return nil
}

// write: a guest write. With no snapshot it goes to the base; otherwise to the newest delta, whose
// blocks are first filled from the layers below (copy on write) so that a partial write keeps the rest.
func (d *diskFiles) write(data []byte, off int64) error {
	if len(d.deltas) == 0 {
		if d.base == "" {
			return fmt.Errorf("the disk has no flat extent")
		}
		return writeAt(d.base, data, off)
	}
	top := d.deltas[len(d.deltas)-1]
	buf := make([]byte, blockSize)
	end := off + int64(len(data))
	for idx := off / blockSize; idx*blockSize < end; idx++ {
		if top.dirty[idx] {
			continue
		}
		b := buf[:blockLen(d.capacity, idx)]
		if err := d.readBlock(idx, len(d.deltas)-1, b); err != nil {
			return err
		}
		if err := writeAt(top.path, b, idx*blockSize); err != nil {
			return err
		}
		top.dirty[idx] = true
	}
	return writeAt(top.path, data, off)
}

// merge writes delta i into the layer below it (the previous delta, or the base) and drops it:
// what removing the snapshot that delta i follows does.
func (d *diskFiles) merge(i int) error {
	src := d.deltas[i]
	target := d.base
	var below *delta
	if i > 0 {
		below = d.deltas[i-1]
		target = below.path
	}
	idxs := make([]int64, 0, len(src.dirty))
	for idx := range src.dirty {
		idxs = append(idxs, idx)
	}
	sort.Slice(idxs, func(a, b int) bool { return idxs[a] < idxs[b] })
	buf := make([]byte, blockSize)
	for _, idx := range idxs {
		b := buf[:blockLen(d.capacity, idx)]
		if err := readAtZero(src.path, b, idx*blockSize); err != nil {
			return err
		}
		if target == "" {
			return fmt.Errorf("the disk has no flat extent to merge into")
		}
		if err := writeAt(target, b, idx*blockSize); err != nil {
			return err
		}
		if below != nil {
			below.dirty[idx] = true
		}
	}
	_ = os.Remove(src.path)
	d.deltas = append(d.deltas[:i], d.deltas[i+1:]...)
	return nil
}
