package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"headinfer/engine/sample"
	"headinfer/vk"
)

// Session is one sequence being generated: the tokens in its KV cache and
// the device state that computes the next one. The CLI, the server and the
// benchmarks all drive the engine through it. A Session is not safe for
// concurrent use.
type Session struct {
	m      *Model
	s      *state
	tokens []int32 // what the KV cache holds, in order
	// ringsFrom is the first of the positions held whose KV every ring
	// slot still holds (see CanKeep): a ring keeps only its latest
	// positions, and a step overwrites the oldest.
	ringsFrom int
	have      bool // the last step left the next token's logits/argmax
	// shifted says the context was shifted (see Shift): only the first
	// exact tokens' KV is what their prefill gives.
	shifted bool
	exact   int
	logits  []float32
	stats   Stats
	failed  error // the device failure that ended the session, if any

	observeID uint64 // the session's number in Options.Monitor's events
}

// ErrDeviceFailed is matched (errors.Is) by the errors of a session whose
// device failed: a submission was refused, the device was lost, or a step
// did not finish in time. Such a session, and its model, cannot be used
// any more; close the model and load it again.
var ErrDeviceFailed = vk.ErrDeviceFailed

// StepGrace is how long after its context's deadline a step may still run
// before the device counts as hung. The caller's deadline usually passes
// between steps; a step that is running then is let finish, since it may
// simply be long (a prefill chunk of a large model on a slow device).
const StepGrace = time.Minute

// Failed is the device failure that ended the session, or nil.
func (se *Session) Failed() error { return se.failed }

// Failed is the failure of the model's device (of any of a split
// model's), or nil while they work.
func (m *Model) Failed() error {
	for _, d := range m.Devices() {
		if err := d.Failed(); err != nil {
			return err
		}
	}
	return nil
}

// useDeadline makes the steps run until the caller returns wait for the
// device until ctx's deadline plus StepGrace (or the device's default
// when ctx has none); the returned function restores the previous one.
func (se *Session) useDeadline(ctx context.Context) func() {
	prev := se.s.deadline
	if d, ok := ctx.Deadline(); ok {
		se.s.deadline = d.Add(StepGrace)
	}
	return func() { se.s.deadline = prev }
}

// Stats are the timings and memory of a session's work so far.
type Stats struct {
	PrefillTokens int
	Prefill       time.Duration
	DecodeTokens  int
	Decode        time.Duration
	Steps         int // forward passes run (one host wait each)
	Shifts        int // context shifts (see Session.Shift)

	// Dispatches, Submissions and Commands count the kernel dispatches,
	// the vkQueueSubmit calls and the command buffers submitted, over all
	// steps.
	Dispatches, Submissions, Commands int
	// DecodeSubmissions and DecodeDispatches are the part of
	// Submissions and Dispatches that decode steps made.
	DecodeSubmissions, DecodeDispatches int
	// Recordings counts the steps recorded (a recording serves every
	// position) and RecordTime is the time they took.
	Recordings int
	RecordTime time.Duration
	// HostWaits counts the host's waits for the device: one per step,
	// and in decode steps that attend streamed heads on the CPU one more
	// per layer. CPUAttention is the time those layers' CPU attention
	// took.
	HostWaits    int
	CPUAttention time.Duration

	// Streamed KV traffic: bytes copied from the host store to the
	// device and written from the device to the host store.
	H2DBytes, D2HBytes uint64
	// CopyWait is, summed over the steps that stream KV, the time the
	// compute queue was not computing: waiting for streamed blocks to
	// arrive (on a device without a transfer queue, running the copies
	// itself) and the gaps between submissions. It is the step's wall
	// time less the compute segments' device time (timestamps), so it is
	// an upper bound on the time attention waited for copies.
	CopyWait time.Duration

	// DeviceTime is, for a model split over devices, the wall time of
	// each device's share of the steps (in layer order; nil on one
	// device), and HandOffBytes the bytes of residual stream the host
	// carried from one device to the next.
	DeviceTime   []time.Duration
	HandOffBytes uint64
}

// Sub is the work done between an earlier reading of a session's stats
// and s.
func (s Stats) Sub(earlier Stats) Stats {
	return Stats{
		PrefillTokens:     s.PrefillTokens - earlier.PrefillTokens,
		Prefill:           s.Prefill - earlier.Prefill,
		DecodeTokens:      s.DecodeTokens - earlier.DecodeTokens,
		Decode:            s.Decode - earlier.Decode,
		Steps:             s.Steps - earlier.Steps,
		Shifts:            s.Shifts - earlier.Shifts,
		Dispatches:        s.Dispatches - earlier.Dispatches,
		Submissions:       s.Submissions - earlier.Submissions,
		Commands:          s.Commands - earlier.Commands,
		DecodeSubmissions: s.DecodeSubmissions - earlier.DecodeSubmissions,
		DecodeDispatches:  s.DecodeDispatches - earlier.DecodeDispatches,
		Recordings:        s.Recordings - earlier.Recordings,
		RecordTime:        s.RecordTime - earlier.RecordTime,
		HostWaits:         s.HostWaits - earlier.HostWaits,
		CPUAttention:      s.CPUAttention - earlier.CPUAttention,
		H2DBytes:          s.H2DBytes - earlier.H2DBytes,
		D2HBytes:          s.D2HBytes - earlier.D2HBytes,
		CopyWait:          s.CopyWait - earlier.CopyWait,
		DeviceTime:        subDurations(s.DeviceTime, earlier.DeviceTime),
		HandOffBytes:      s.HandOffBytes - earlier.HandOffBytes,
	}
}

// subDurations is a − b element by element (b may be shorter).
func subDurations(a, b []time.Duration) []time.Duration {
	if a == nil {
		return nil
	}
	d := slices.Clone(a)
	for i := range min(len(a), len(b)) {
		d[i] -= b[i]
	}
	return d
}

// Memory reports device memory: by kind, peak, and the parts the engine
// places.
type Memory struct {
	DeviceBytes     uint64 `json:"device_bytes"`      // device-local bytes live
	DeviceBytesPeak uint64 `json:"device_bytes_peak"` // device-local bytes at the peak
	HostBytes       uint64 `json:"host_bytes"`        // host-visible Vulkan memory live (staging, readback)
	WeightBytes     uint64 `json:"weight_bytes"`
	KVBytes         uint64 `json:"device_kv_bytes"` // device-local bytes of the KV cache: resident slots and streaming buffers
	// DeviceKVBytesPeak is the most device memory the KV cache held.
	DeviceKVBytesPeak uint64 `json:"device_kv_bytes_peak"`
	HostKVBytes       uint64 `json:"host_kv_bytes"`  // host memory of the streamed slots
	ResidentSlots     int    `json:"resident_slots"` // (layer, KV head) slots on the device
	StreamedSlots     int    `json:"streamed_slots"` // slots in host memory, streamed
}

// NewSession allocates a sequence's activations and KV cache.
func (m *Model) NewSession() (*Session, error) {
	s, err := newState(m)
	if err != nil {
		return nil, err
	}
	se := &Session{m: m, s: s}
	se.observeOpen()
	return se, nil
}

// Close frees the session's device memory.
func (se *Session) Close() {
	if se.s != nil {
		se.observe(EventClose, 0, time.Time{})
		se.s.free()
		se.s = nil
	}
}

// CtxSize is the number of positions the KV cache holds.
func (se *Session) CtxSize() int { return se.s.ctx }

// Tokens are the ids in the KV cache, prompt and generated.
func (se *Session) Tokens() []int32 { return se.tokens }

// Reset empties the KV cache (its contents are simply overwritten).
func (se *Session) Reset() {
	se.tokens = se.tokens[:0]
	se.have = false
	se.ringsFrom = 0
	se.shifted = false
}

// Prefill appends ids to the sequence, chunk by chunk, leaving the logits
// of the last one for Next. withLogits copies those logits to the host
// (needed for sampling other than greedy).
func (se *Session) Prefill(ctx context.Context, ids []int32, withLogits bool) error {
	if err := se.m.CanGenerate(); err != nil {
		return err
	}
	return se.prefill(ctx, ids, withLogits, nil)
}

// prefill is Prefill that, given a pooler, also hands it each chunk's
// final hidden states.
func (se *Session) prefill(ctx context.Context, ids []int32, withLogits bool, pool *pooler) error {
	if len(ids) == 0 {
		return fmt.Errorf("prefill: no tokens")
	}
	if n := len(se.tokens) + len(ids); n > se.s.ctx {
		return fmt.Errorf("%d tokens do not fit in the context of %d positions (%d already used): pass a larger --ctx-size or a shorter prompt", len(ids), se.s.ctx, len(se.tokens))
	}
	defer se.useDeadline(ctx)()
	t0 := time.Now()
	var paused time.Duration // not prefill time
	chunks := (len(ids) + se.s.chunk - 1) / se.s.chunk
	for i, k := 0, 1; i < len(ids); i, k = i+se.s.chunk, k+1 {
		part := ids[i:min(i+se.s.chunk, len(ids))]
		last := i+len(part) == len(ids)
		paused += se.pause()
		// After the pause: the caller may have given up while it held.
		if err := ctx.Err(); err != nil {
			return err
		}
		tc := time.Now()
		if err := se.step(part, withLogits && last, false, pool != nil); err != nil {
			return err
		}
		if pool != nil {
			pool.add(se.s.hidden().Bytes(), len(part))
		}
		se.observe(EventPrefill, len(part), tc)
		if report := se.m.opt.Progress; report != nil && chunks > 1 {
			report(Progress{Work: ProgressPrefill, Done: int64(i + len(part)), Total: int64(len(ids)), Chunk: k, Chunks: chunks})
		}
	}
	se.stats.PrefillTokens += len(ids)
	se.stats.Prefill += time.Since(t0) - paused
	return nil
}

// Decode appends one token and computes the logits after it.
func (se *Session) Decode(id int32, withLogits bool) error {
	if err := se.m.CanGenerate(); err != nil {
		return err
	}
	if len(se.tokens)+1 > se.s.ctx {
		return fmt.Errorf("context is full (%d positions): pass a larger --ctx-size", se.s.ctx)
	}
	se.pause()
	t0 := time.Now()
	subs, disp := se.s.submissions, se.s.dispatches
	if err := se.step([]int32{id}, withLogits, true, false); err != nil {
		return err
	}
	se.stats.DecodeSubmissions += se.s.submissions - subs
	se.stats.DecodeDispatches += se.s.dispatches - disp
	se.stats.DecodeTokens++
	se.stats.Decode += time.Since(t0)
	se.observe(EventDecode, 1, t0)
	return nil
}

// pause holds while the monitor's view is paused. The time paused does
// not count against the step's deadline: the device is not late.
func (se *Session) pause() time.Duration {
	d := se.m.opt.Monitor.hold()
	if d > 0 && !se.s.deadline.IsZero() {
		se.s.deadline = se.s.deadline.Add(d)
	}
	return d
}

// step runs ids (a prefill chunk, or with decode one generated token;
// with hidden, their final hidden states go to the host).
func (se *Session) step(ids []int32, withLogits, decode, hidden bool) error {
	if se.failed != nil {
		return se.failed
	}
	se.have = false
	if err := se.s.run(ids, len(se.tokens), withLogits, decode, hidden); err != nil {
		if errors.Is(err, ErrDeviceFailed) {
			se.failed = err
		}
		return err
	}
	se.stepped(ids, withLogits)
	return nil
}

// stepped records a step of ids that left the next token's argmax (and,
// with withLogits, its logits) in se.s.
func (se *Session) stepped(ids []int32, withLogits bool) {
	se.tokens = append(se.tokens, ids...)
	se.ringsWrote(len(se.tokens))
	se.stats.Steps++
	se.have = true
	if withLogits {
		se.logits = se.s.logitsInto(se.logits)
	} else {
		se.logits = se.logits[:0]
	}
}

// Argmax is the greedy choice after the last step, computed on the device.
func (se *Session) Argmax() (int32, error) {
	if !se.have {
		return 0, fmt.Errorf("no logits: prefill or decode first")
	}
	return se.s.argmax(), nil
}

// Logits are the last step's logits, when it was asked for them.
func (se *Session) Logits() []float32 { return se.logits }

// Stats reports timings so far.
func (se *Session) Stats() Stats {
	st := se.stats
	if se.s != nil {
		st.H2DBytes, st.D2HBytes, st.CopyWait = se.s.h2d, se.s.d2h, se.s.copyWait
		st.Dispatches, st.Submissions, st.Commands = se.s.dispatches, se.s.submissions, se.s.commands
		st.Recordings, st.RecordTime = se.s.recordings, se.s.recordTime
		st.HostWaits, st.CPUAttention = se.s.hostWaits, se.s.hostTasks
		st.DeviceTime, st.HandOffBytes = slices.Clone(se.s.deviceTime), se.s.handOffs
	}
	return st
}

// Memory reports the device memory in use.
func (se *Session) Memory() Memory {
	var ms vk.MemoryStats
	for _, d := range se.m.Devices() {
		m := d.Memory()
		for k := range ms.Live {
			ms.Live[k] += m.Live[k]
			ms.Peak[k] += m.Peak[k]
		}
	}
	return Memory{
		DeviceBytes:     ms.Live[vk.DeviceLocal],
		DeviceBytesPeak: ms.Peak[vk.DeviceLocal],
		HostBytes:       ms.Live[vk.Upload] + ms.Live[vk.Readback],
		WeightBytes:     se.m.weights,
		KVBytes:         se.s.kv.DeviceBytes(),
		// The cache's device buffers are allocated once, at NewSession.
		DeviceKVBytesPeak: se.s.kv.DeviceBytes(),
		HostKVBytes:       se.s.kv.HostBytes(),
		ResidentSlots:     se.m.plan.Resident,
		StreamedSlots:     se.m.plan.Streamed,
	}
}

// GenerateParams control Generate.
type GenerateParams struct {
	MaxTokens int           // stop after this many new tokens
	Sampling  sample.Params // Temperature 0 = greedy, on the device
	// Logits, when set, receives the logits before each generated token.
	Logits func(pos int, logits []float32)
	// Sampled, when set, receives each token drawn, an end-of-generation
	// token included, with the raw logits it was drawn from (valid during
	// the call only). Unlike Logits it knows the token, so a caller that
	// needs the chosen token's probability (logprobs) need not keep a copy
	// of every step's logits until the token arrives.
	Sampled func(id int32, logits []float32)
	// Constraint, when set, restricts the tokens drawn (a grammar). It
	// holds the generation's state, so each generation needs its own.
	// Logits and Sampled still see the raw logits, before its mask.
	Constraint sample.Constraint
	// Shift lets generation go on when the context is full, as
	// llama.cpp's context shift does: the first Keep tokens stay, half of
	// the others are dropped (see Session.Shift). Without it a full
	// context ends generation (FinishLength).
	Shift bool
	Keep  int
}

// makeRoom shifts se's context when it is full and p allows it (see
// Shift). It reports whether there is room for one more token.
func (p GenerateParams) makeRoom(se *Session) (bool, error) {
	n := len(se.tokens)
	if n < se.s.ctx {
		return true, nil
	}
	keep := min(max(p.Keep, 0), n)
	discard := (n - keep) / 2
	if !p.Shift || discard < 1 {
		return false, nil
	}
	return true, se.Shift(keep, discard)
}

// wantsLogits reports whether generating with p needs the logits on the
// host: for sampling other than greedy, under a constraint, or for a
// caller that reads them.
func (p GenerateParams) wantsLogits() bool {
	return !p.deviceArgmax() || p.Logits != nil || p.Sampled != nil
}

// deviceArgmax reports whether the next token is the argmax of the raw
// logits, which the device computes: greedy sampling with no constraint
// (whose best allowed token may not be the best token).
func (p GenerateParams) deviceArgmax() bool {
	return p.Sampling.Greedy() && p.Constraint == nil
}

// pick chooses the next token after the last step of se.
func (p GenerateParams) pick(se *Session, sampler *sample.Sampler) (int32, error) {
	switch {
	case p.deviceArgmax():
		return se.s.argmax(), nil
	case p.Constraint != nil:
		return sampler.SampleConstrained(se.logits, se.tokens, p.Constraint)
	}
	return sampler.Sample(se.logits, se.tokens), nil
}

// prepare lets the constraint compute its next mask while the device
// runs the next step.
func (p GenerateParams) prepare() {
	if pr, ok := p.Constraint.(sample.Preparer); ok {
		pr.Prepare()
	}
}

// FinishReason says why generation stopped.
type FinishReason string

// Finish reasons, named as the OpenAI API names them.
const (
	FinishStop   FinishReason = "stop"   // end-of-generation token, or the caller stopped
	FinishLength FinishReason = "length" // MaxTokens or the context reached
)

// Generate prefills prompt and then samples up to p.MaxTokens tokens,
// calling emit with each; emit returning false stops generation. The
// end-of-generation token is not emitted.
func (se *Session) Generate(ctx context.Context, prompt []int32, p GenerateParams, emit func(id int32) bool) (FinishReason, error) {
	if err := p.Sampling.Validate(); err != nil {
		return "", err
	}
	if p.MaxTokens <= 0 {
		return "", fmt.Errorf("max tokens must be positive, got %d", p.MaxTokens)
	}
	defer se.useDeadline(ctx)()
	withLogits := p.wantsLogits()
	if err := se.Prefill(ctx, prompt, withLogits); err != nil {
		return "", err
	}
	sampler := sample.New(p.Sampling)
	tok := se.m.Tokenizer
	for n := 0; ; n++ {
		if p.Logits != nil {
			p.Logits(len(se.tokens), se.logits)
		}
		id, err := p.pick(se, sampler)
		if err != nil {
			return "", err
		}
		if p.Sampled != nil {
			p.Sampled(id, se.logits)
		}
		if tok.IsEOG(id) {
			return FinishStop, nil
		}
		if !emit(id) {
			return FinishStop, nil
		}
		if n+1 >= p.MaxTokens {
			return FinishLength, nil
		}
		if room, err := p.makeRoom(se); err != nil || !room {
			return FinishLength, err
		}
		if err := ctx.Err(); err != nil {
			return "", err
		}
		p.prepare()
		if err := se.Decode(id, withLogits); err != nil {
			return "", err
		}
	}
}
