package reports

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/meshproof/meshproof/reports/record"
)

// The files WriteAll writes into a run directory.
const (
	FileJSON     = "report.json"
	FileMarkdown = "summary.md"
	FileJUnit    = "junit.xml"
	FileHTML     = "report.html"
)

// WriteAll writes every report file into the run directory dir (which must exist): report.json,
// summary.md, junit.xml and report.html, each atomically (a temporary file, then renamed). It writes as
// many as it can and returns every error, joined.
func WriteAll(dir string, r Report, rec *record.Record) error {
	return errors.Join(append([]error{WriteJSON(filepath.Join(dir, FileJSON), r)}, writeFiles(dir, []dirFile{
		{FileMarkdown, func(w io.Writer) error { return WriteMarkdown(w, r) }},
		{FileJUnit, func(w io.Writer) error { return WriteJUnit(w, r) }},
		{FileHTML, func(w io.Writer) error { return WriteHTML(w, r, rec) }},
	})...)...)
}

// dirFile is a file of a run or sweep directory and its writer.
type dirFile struct {
	name  string
	write func(io.Writer) error
}

// writeFiles writes each file into dir atomically, as many as it can, and returns their errors.
func writeFiles(dir string, files []dirFile) []error {
	var errs []error
	for _, f := range files {
		var b bytes.Buffer
		path := filepath.Join(dir, f.name)
		if err := f.write(&b); err != nil {
			errs = append(errs, fmt.Errorf("report %s: %w", path, err))
			continue
		}
		errs = append(errs, writeFileAtomic(path, b.Bytes()))
	}
	return errs
}
