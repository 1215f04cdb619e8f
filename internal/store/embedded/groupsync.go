package embedded

import "sync"

// groupSync coalesces fsyncs of one directory: a caller whose change to the
// directory is complete joins the batch that has not started yet, and one
// fsync that starts after every member joined covers them all. Concurrent
// creates in one folder then share a directory fsync instead of queueing
// one each behind the file system's journal.
type groupSync struct {
	run  sync.Mutex // held while an fsync runs: the next batch gathers meanwhile
	mu   sync.Mutex
	next *syncBatch // the batch still open to joiners
}

type syncBatch struct {
	done chan struct{}
	err  error
}

// do returns once an fsync (sync) that started after the call was made has
// finished, and returns its error.
func (g *groupSync) do(sync func() error) error {
	g.mu.Lock()
	b, leader := g.next, false
	if b == nil {
		b, leader = &syncBatch{done: make(chan struct{})}, true
		g.next = b
	}
	g.mu.Unlock()
	if leader {
		g.run.Lock()
		g.mu.Lock()
		g.next = nil // later callers form the next batch
		g.mu.Unlock()
		b.err = sync()
		g.run.Unlock()
		close(b.done)
	}
	<-b.done
	return b.err
}
