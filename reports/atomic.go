package reports

import (
	"fmt"
	"os"
	"path/filepath"
)

// writeFileAtomic writes data to path atomically: to a temporary file in the same directory, synced,
// then renamed over path, so that readers see the old file or the whole new one, never a part. It leaves
// no temporary file behind on failure.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("report %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp) // best effort: the temporary file is ours
		return fmt.Errorf("report %s: %w", path, err)
	}
	return nil
}

// WriteFileAtomic writes data to path as the run directory's files are written: to a temporary file
// in the same directory, synced, then renamed over path. For report copies outside a run directory
// (meshproof run --junit PATH).
func WriteFileAtomic(path string, data []byte) error { return writeFileAtomic(path, data) }
