package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"headinfer/engine/sample"
)

// Batch generates several sequences of one model at once (continuous
// batching). It owns a fixed number of slots, each a Session with its own
// KV cache. A request takes a free slot, is prefilled chunk by chunk, and
// then joins the decode steps, each of which computes the next token of
// every sequence in the decode phase in one forward pass (see batchStep);
// it leaves when it finishes, is cancelled or its caller stops reading.
// Between two decode steps the scheduler runs one prefill chunk of a
// waiting prompt, so that running streams do not stall for a whole
// prefill.
//
// A sequence's tokens do not depend on who else is in the batch: its
// prefill runs the same chunks as a solo Session.Generate, and a batched
// decode step gives each sequence the bits its own decode step gives.
//
// A finished sequence's KV stays in its slot until the slot is needed:
// a request goes to the free slot holding the longest prefix of its
// prompt (else to the least recently used), and reuses that prefix; when
// another slot, running or not, holds a longer one, its KV is copied.
//
// All device work runs on one goroutine of the Batch; Generate and Do
// hand work to it and wait. A Batch is safe for concurrent use.
type Batch struct {
	m     *Model
	slots []*batchSlot
	step  *batchStep // nil with one slot

	in     chan *batchSeq
	jobs   chan batchJob
	poke   chan struct{} // wakes the scheduler: a caller stopped
	quit   chan struct{}
	done   chan struct{} // the scheduler returned
	closed sync.Once

	// Scheduler state.
	pending []*batchSeq // waiting for a slot, in arrival order
	active  []*batchSeq // holding a slot, in admission order
	tick    uint64
	failed  error

	// OnStep, when set before the first Generate, hears the number of
	// sequences of each decode step and the step's wall time, on the
	// scheduler's goroutine, after the step and before its tokens go to
	// the callers. The time is the device step's, from recording through
	// submit to the wait for its results (as Stats.Decode counts it): not
	// sampling, not the callers' work.
	OnStep func(sequences int, took time.Duration)

	running atomic.Int32
	held    atomic.Int64 // KV positions the running sequences hold
	infos   atomic.Pointer[[]SlotInfo]
}

// SlotInfo is what one slot of a Batch holds, as of the scheduler's last
// step.
type SlotInfo struct {
	Busy      bool // a sequence runs in it
	Tokens    int  // positions of KV it holds (kept for reuse when idle)
	Generated int  // tokens its running sequence has generated so far
}

// batchSlot is one sequence's session and when it was last used.
type batchSlot struct {
	se   *Session
	used uint64
	busy *batchSeq
}

// Request is one generation for Batch.Generate.
type Request struct {
	Prompt []int32
	Params GenerateParams
	// Prepare, when set, decides which KV the slot's session starts from
	// before the prompt is prefilled, and returns how many leading prompt
	// tokens need no prefill (at most len(Prompt)−1). It runs on the
	// scheduler's goroutine, with the session to itself; by default the
	// session keeps the longest prefix of the prompt it holds
	// (Session.ReusePrefix).
	Prepare func(slot int, se *Session) int
	// Fresh prefills the whole prompt, reusing no KV of any slot (to
	// measure what reuse saves); Prepare is not called.
	Fresh bool
	// Slot, when set, is the slot the request must run in: it waits for
	// that one (others behind it may start meanwhile).
	Slot *int
}

// Result is how a generation ended.
type Result struct {
	Finish FinishReason
	Slot   int   // the slot it ran in
	Cached int   // prompt tokens whose KV was reused, not prefilled
	Tokens int   // tokens generated (emitted, or cut off when the caller stopped)
	Stats  Stats // the work done for it (decode steps shared with others count in full)
	// Embedding is Embed's vector.
	Embedding []float32
}

// batchSeq is one request in the scheduler.
type batchSeq struct {
	req     Request
	ctx     context.Context
	slot    int
	se      *Session
	sampler *sample.Sampler
	logits  bool    // the sequence needs its logits on the host
	rest    []int32 // prompt tokens still to prefill
	next    int32   // the token its next decode step feeds
	decode  bool    // prefilled: it joins the decode steps
	embed   *pooler // an embedding (Embed): prefilled only, its hidden states pooled
	before  Stats

	stop     atomic.Bool   // the caller is gone
	wake     chan struct{} // tokens or the end are ready (capacity 1)
	released chan struct{} // closed once the scheduler let go of it

	mu     sync.Mutex // guards what follows, shared with the caller
	out    []int32
	ended  bool
	result Result
	err    error
}

// batchJob is work Do runs on the scheduler's goroutine.
type batchJob struct {
	slot int
	fn   func(se *Session) error
	done chan error
}

// ErrSlotBusy is returned by Do for a slot whose sequence is running.
var ErrSlotBusy = errors.New("slot is busy")

// errBatchClosed is returned for work given to a closed Batch.
var errBatchClosed = errors.New("engine: batch closed")

// NewBatch opens slots sessions of m (one per parallel sequence) and
// starts their scheduler. Close it when done.
func (m *Model) NewBatch(slots int) (b *Batch, err error) {
	if slots < 1 {
		return nil, fmt.Errorf("engine: a batch of %d sequences", slots)
	}
	b = &Batch{m: m, in: make(chan *batchSeq), jobs: make(chan batchJob), poke: make(chan struct{}, 1),
		quit: make(chan struct{}), done: make(chan struct{})}
	defer func() {
		if err != nil {
			b.free()
		}
	}()
	for i := 0; i < slots; i++ {
		se, err := m.NewSession()
		if err != nil {
			return nil, fmt.Errorf("session %d of %d: %w", i+1, slots, err)
		}
		b.slots = append(b.slots, &batchSlot{se: se})
	}
	if slots > 1 {
		if b.step, err = newBatchStep(m, slots); err != nil {
			return nil, err
		}
	}
	go b.loop()
	return b, nil
}

// Slots is the number of sequences the batch runs at once.
func (b *Batch) Slots() int { return len(b.slots) }

// KVUsage is the share of the batch's KV positions (slots × context) that
// the running sequences hold, 0 to 1. What finished sequences left in
// their slots is not counted: it is there to reuse, and any request may
// take its place.
func (b *Batch) KVUsage() float64 {
	return float64(b.held.Load()) / float64(len(b.slots)*b.slots[0].se.CtxSize())
}

// SlotInfos reports what each slot holds, as of the scheduler's last step.
func (b *Batch) SlotInfos() []SlotInfo {
	if p := b.infos.Load(); p != nil {
		return *p
	}
	return make([]SlotInfo, len(b.slots))
}

// Running is the number of sequences holding a slot now.
func (b *Batch) Running() int { return int(b.running.Load()) }

// Close stops the scheduler, failing what still runs or waits, and frees
// the sessions.
func (b *Batch) Close() {
	b.closed.Do(func() {
		close(b.quit)
		<-b.done
		b.free()
	})
}

func (b *Batch) free() {
	if b.step != nil {
		b.step.free()
		b.step = nil
	}
	for _, sl := range b.slots {
		sl.se.Close()
	}
	b.slots = nil
}

// Memory reports the device memory in use, with the KV of every slot.
func (b *Batch) Memory() Memory {
	mem := b.slots[0].se.Memory()
	for _, sl := range b.slots[1:] {
		m := sl.se.Memory()
		mem.KVBytes += m.KVBytes
		mem.DeviceKVBytesPeak += m.DeviceKVBytesPeak
		mem.HostKVBytes += m.HostKVBytes
	}
	return mem
}

// Do runs fn with slot's session on the scheduler's goroutine, between
// steps, when no sequence holds the slot (else ErrSlotBusy): for saving
// or restoring its KV. What fn leaves in the session is what the next
// request to that slot may reuse.
func (b *Batch) Do(ctx context.Context, slot int, fn func(se *Session) error) error {
	if slot < 0 || slot >= len(b.slots) {
		return fmt.Errorf("slot %d does not exist (the batch has %d)", slot, len(b.slots))
	}
	j := batchJob{slot: slot, fn: fn, done: make(chan error, 1)}
	select {
	case b.jobs <- j:
	case <-b.done:
		return errBatchClosed
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	return <-j.done
}

// Generate runs r in a free slot (waiting for one), passing each new
// token to emit on the caller's goroutine as the steps produce it; emit
// returning false stops the generation (FinishStop), as does the end of
// ctx (its cause is returned). It returns once the scheduler has let go
// of the sequence, so that the slot holds its KV.
func (b *Batch) Generate(ctx context.Context, r Request, emit func(id int32) bool) (Result, error) {
	if err := r.Params.Sampling.Validate(); err != nil {
		return Result{}, err
	}
	if r.Params.MaxTokens <= 0 {
		return Result{}, fmt.Errorf("max tokens must be positive, got %d", r.Params.MaxTokens)
	}
	if len(r.Prompt) == 0 {
		return Result{}, errors.New("prefill: no tokens")
	}
	if err := b.m.CanGenerate(); err != nil {
		return Result{}, err
	}
	q := &batchSeq{req: r, ctx: ctx, slot: -1, wake: make(chan struct{}, 1), released: make(chan struct{})}
	return b.follow(ctx, q, emit)
}

// Embed computes the embedding of prompt in a free slot (waiting for
// one), as Session.Embed does, between the other sequences' steps: one
// prefill chunk at a time, like a generation's. The slot then holds the
// prompt's KV for a later generation to reuse.
func (b *Batch) Embed(ctx context.Context, prompt []int32) (Result, error) {
	if err := b.m.CanEmbed(); err != nil {
		return Result{}, err
	}
	if len(prompt) == 0 {
		return Result{}, errors.New("embedding: no tokens")
	}
	if err := b.m.checkWhole(prompt, b.m.plan.Chunk); err != nil {
		return Result{}, err
	}
	q := &batchSeq{req: Request{Prompt: prompt}, ctx: ctx, slot: -1, embed: newPooler(b.m.Config.Pooling, b.m.Config.Dim),
		wake: make(chan struct{}, 1), released: make(chan struct{})}
	return b.follow(ctx, q, func(int32) bool { return true })
}

// follow hands q to the scheduler and passes its tokens to emit until it
// ends.
func (b *Batch) follow(ctx context.Context, q *batchSeq, emit func(id int32) bool) (Result, error) {
	select {
	case b.in <- q:
	case <-b.done:
		return Result{}, errBatchClosed
	case <-ctx.Done():
		return Result{}, context.Cause(ctx)
	}
	leave := func() Result {
		q.stop.Store(true)
		select {
		case b.poke <- struct{}{}:
		default:
		}
		<-q.released
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.result
	}
	var out []int32
	for {
		select {
		case <-q.wake:
		case <-ctx.Done():
			res := leave()
			return res, context.Cause(ctx)
		}
		q.mu.Lock()
		out, q.out = append(out[:0], q.out...), q.out[:0]
		ended, res, err := q.ended, q.result, q.err
		q.mu.Unlock()
		for _, id := range out {
			if !emit(id) {
				res := leave()
				res.Finish = FinishStop
				return res, nil
			}
		}
		if ended {
			<-q.released
			return res, err
		}
	}
}

// loop is the scheduler: it admits requests into free slots and runs
// prefill chunks and decode steps until Close.
func (b *Batch) loop() {
	defer close(b.done)
	for {
		if b.receive(len(b.active) == 0 && len(b.pending) == 0) {
			for _, q := range append(b.pending, b.active...) {
				b.end(q, Result{}, errBatchClosed)
			}
			return
		}
		b.dropStopped()
		b.admit()
		b.advance()
		var held int64
		for _, q := range b.active {
			held += int64(len(q.se.tokens))
		}
		b.held.Store(held)
		infos := make([]SlotInfo, len(b.slots))
		for i, sl := range b.slots {
			infos[i] = SlotInfo{Busy: sl.busy != nil, Tokens: len(sl.se.tokens)}
			if q := sl.busy; q != nil {
				q.mu.Lock()
				infos[i].Generated = q.result.Tokens
				q.mu.Unlock()
			}
		}
		b.infos.Store(&infos)
	}
}

// ready is a closed channel: a receive from it never waits.
var ready = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// receive takes the work handed to the scheduler (requests, jobs, the
// callers' wake-ups) until none is left, first waiting for some if wait
// is set. It reports whether Close was called.
func (b *Batch) receive(wait bool) (quit bool) {
	for {
		var poll <-chan struct{} // nil: blocks
		if !wait {
			poll = ready
		}
		select {
		case q := <-b.in:
			b.pending = append(b.pending, q)
		case j := <-b.jobs:
			b.runJob(j)
		case <-b.poke:
		case <-b.quit:
			return true
		case <-poll:
			return false
		}
		wait = false
	}
}

func (b *Batch) runJob(j batchJob) {
	sl := b.slots[j.slot]
	switch {
	case b.failed != nil:
		j.done <- b.failed
	case sl.busy != nil:
		j.done <- ErrSlotBusy
	default:
		b.tick++
		sl.used = b.tick
		j.done <- j.fn(sl.se)
	}
}

// dropStopped ends the sequences whose caller left or whose context ended.
func (b *Batch) dropStopped() {
	for _, list := range []*[]*batchSeq{&b.pending, &b.active} {
		for _, q := range append([]*batchSeq(nil), *list...) {
			if q.stop.Load() || q.ctx.Err() != nil {
				b.end(q, Result{Finish: FinishStop}, context.Cause(q.ctx))
			}
		}
	}
}

// admit gives free slots to waiting requests, in arrival order: each the
// free slot that holds the longest prefix of its prompt, or else the
// least recently used; a request for a given slot gets that one when it
// is free.
func (b *Batch) admit() {
	for i := 0; i < len(b.pending); {
		q := b.pending[i]
		if b.failed != nil {
			b.end(q, Result{}, b.failed)
			continue
		}
		if s := q.req.Slot; s != nil && (*s < 0 || *s >= len(b.slots)) {
			b.end(q, Result{}, fmt.Errorf("slot %d does not exist (the batch has %d)", *s, len(b.slots)))
			continue
		}
		best, bestLen := -1, -1
		for i, sl := range b.slots {
			if sl.busy != nil || q.req.Slot != nil && *q.req.Slot != i {
				continue
			}
			n := PrefixLen(sl.se.Reusable(), q.req.Prompt)
			if n > bestLen || (n == bestLen && sl.used < b.slots[best].used) {
				best, bestLen = i, n
			}
		}
		if best < 0 {
			if q.req.Slot == nil {
				return // no slot is free: nothing behind it can start either
			}
			i++ // its slot is busy: those behind it may take another
			continue
		}
		b.pending = append(b.pending[:i], b.pending[i+1:]...)
		sl := b.slots[best]
		b.tick++
		sl.busy, sl.used = q, b.tick
		q.slot, q.se = best, sl.se
		b.active = append(b.active, q)
		b.running.Add(1)
		b.start(q)
	}
}

// start prepares an admitted sequence's session and its prefill.
func (b *Batch) start(q *batchSeq) {
	se, r := q.se, q.req
	if n := len(r.Prompt); n > se.CtxSize() {
		b.end(q, Result{}, fmt.Errorf("%d tokens do not fit in the context of %d positions: pass a larger --ctx-size or a shorter prompt", n, se.CtxSize()))
		return
	}
	if q.embed != nil {
		// Every token's hidden state is needed: nothing is reused.
		se.Reset()
		q.before = se.Stats()
		q.rest = r.Prompt
		return
	}
	cached := 0
	switch {
	case r.Fresh:
		se.Reset()
	case r.Prepare != nil:
		cached = r.Prepare(q.slot, se)
	default:
		cached = se.ReusePrefix(r.Prompt)
	}
	if cached < 0 || cached >= len(r.Prompt) || PrefixLen(se.Tokens(), r.Prompt) < cached || len(se.Tokens()) != cached {
		// Prepare left something else than the prefix it claims.
		se.Reset()
		cached = 0
	}
	// Another slot, running or not, may hold more of the prompt (a
	// system prompt every request shares): its rows are final, so they
	// are copied instead of prefilled.
	donor, n := -1, cached
	for i, sl := range b.slots {
		if m := PrefixLen(sl.se.Reusable(), r.Prompt); i != q.slot && m > n && !r.Fresh && sl.se.CanKeep(m) {
			donor, n = i, m
		}
	}
	if donor >= 0 {
		if err := se.CopyPrefix(b.slots[donor].se, n); err != nil {
			n = 0 // se is empty: the prompt is prefilled whole
		}
		cached = n
	}
	q.result.Cached = cached
	q.before = se.Stats()
	q.rest = r.Prompt[cached:]
	q.logits = r.Params.wantsLogits()
	q.sampler = sample.New(r.Params.Sampling)
}

// advance runs one prefill chunk, if a sequence waits for one, and then
// one decode step of every sequence in the decode phase.
func (b *Batch) advance() {
	for _, q := range b.active {
		if q.decode {
			continue
		}
		se := q.se
		part := q.rest[:min(se.s.chunk, len(q.rest))]
		last := len(part) == len(q.rest)
		if err := se.prefill(q.ctx, part, q.logits && last, q.embed); err != nil {
			b.fail(q, err)
		} else if q.rest = q.rest[len(part):]; last && q.embed != nil {
			q.result.Embedding = q.embed.result()
			b.end(q, Result{Finish: FinishStop}, nil)
		} else if last {
			b.sampled(q)
		}
		break
	}
	var seqs []*batchSeq
	for _, q := range b.active {
		if q.decode {
			seqs = append(seqs, q)
		}
	}
	if len(seqs) == 0 {
		return
	}
	var err error
	var took time.Duration
	if len(seqs) == 1 {
		q := seqs[0]
		restore := q.se.useDeadline(q.ctx)
		before := q.se.stats.Decode
		err = q.se.Decode(q.next, q.logits)
		took = q.se.stats.Decode - before // the step as Decode times it
		restore()
	} else {
		took, err = b.decodeBatch(seqs)
	}
	if err != nil {
		for _, q := range seqs {
			b.fail(q, err)
		}
		return
	}
	if b.OnStep != nil {
		b.OnStep(len(seqs), took)
	}
	for _, q := range seqs {
		b.sampled(q)
	}
}

// decodeBatch runs one batched decode step of seqs and returns its time.
func (b *Batch) decodeBatch(seqs []*batchSeq) (time.Duration, error) {
	// Rows in the order of the states, not of the requests' arrival: the
	// recorded step of a set of sequences is then one, whatever the order
	// they run in (continuous batching rotates it).
	seqs = slices.SortedFunc(slices.Values(seqs), func(a, c *batchSeq) int { return cmp.Compare(a.se.s.id, c.se.s.id) })
	states := make([]*state, len(seqs))
	ids := make([]int32, len(seqs))
	starts := make([]int, len(seqs))
	withLogits, bounded := false, true
	var deadline time.Time // the latest caller's, or none if one has none
	for i, q := range seqs {
		states[i], ids[i], starts[i] = q.se.s, q.next, len(q.se.tokens)
		withLogits = withLogits || q.logits
		d, ok := q.ctx.Deadline()
		bounded = bounded && ok
		if d = d.Add(StepGrace); d.After(deadline) {
			deadline = d
		}
	}
	if !bounded {
		deadline = time.Time{}
	}
	b.slots[0].se.pause()
	t0 := time.Now()
	st, err := b.step.run(states, ids, starts, withLogits, deadline)
	if err != nil {
		return 0, err
	}
	took := time.Since(t0)
	for i, q := range seqs {
		se := q.se
		se.stepped([]int32{ids[i]}, withLogits)
		se.stats.DecodeTokens++
		se.stats.Decode += took
		se.stats.DecodeSubmissions += st.Submissions
		se.stats.DecodeDispatches += st.Dispatches
		se.observe(EventDecode, 1, t0)
	}
	return took, nil
}

// sampled takes the token after q's last step: it ends the sequence at an
// end-of-generation token, at its token limit or when the context is
// full, and otherwise feeds the token to its next decode step.
func (b *Batch) sampled(q *batchSeq) {
	se, p := q.se, q.req.Params
	if p.Logits != nil {
		p.Logits(len(se.tokens), se.logits)
	}
	id, err := p.pick(se, q.sampler)
	if err != nil {
		b.end(q, Result{}, err)
		return
	}
	if p.Sampled != nil {
		p.Sampled(id, se.logits)
	}
	if b.m.Tokenizer.IsEOG(id) {
		b.end(q, Result{Finish: FinishStop}, nil)
		return
	}
	q.mu.Lock()
	q.out = append(q.out, id)
	q.result.Tokens++
	n := q.result.Tokens
	q.mu.Unlock()
	q.signal()
	if n >= p.MaxTokens {
		b.end(q, Result{Finish: FinishLength}, nil)
		return
	}
	if room, err := p.makeRoom(se); err != nil || !room {
		b.end(q, Result{Finish: FinishLength}, err)
		return
	}
	q.next, q.decode = id, true
	p.prepare()
}

// fail ends q with err; a device failure ends every sequence, now and
// later.
func (b *Batch) fail(q *batchSeq, err error) {
	if errors.Is(err, ErrDeviceFailed) {
		b.failed = err
		for _, o := range append(append([]*batchSeq(nil), b.active...), b.pending...) {
			b.end(o, Result{}, err)
		}
		return
	}
	b.end(q, Result{}, err)
}

// end lets go of q: frees its slot (keeping its KV for reuse) and hands
// the caller its result.
func (b *Batch) end(q *batchSeq, r Result, err error) {
	for _, list := range []*[]*batchSeq{&b.pending, &b.active} {
		for i, x := range *list {
			if x == q {
				*list = append((*list)[:i], (*list)[i+1:]...)
				break
			}
		}
	}
	if q.slot >= 0 && b.slots[q.slot].busy == q {
		b.slots[q.slot].busy = nil
		b.running.Add(-1)
	}
	q.mu.Lock()
	if !q.ended {
		q.ended = true
		q.result.Finish, q.result.Slot, q.err = r.Finish, q.slot, err
		if q.se != nil {
			q.result.Stats = q.se.Stats().Sub(q.before)
		}
		close(q.released)
	}
	q.mu.Unlock()
	q.signal()
}

func (q *batchSeq) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
