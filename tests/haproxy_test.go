package tests

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// balancer is HAProxy running deploy/haproxy/haproxy.cfg (or a variant of
// it) in front of the test's replicas.
type balancer struct {
	url, stats string
	cmd        *exec.Cmd
	log        *lockedBuffer
}

// startHAProxy runs HAProxy with the config text cfg and env, and waits
// until it reports every replica of its affinity backend up.
func startHAProxy(t *testing.T, haproxy, cfg string, env map[string]string, replicas int) *balancer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	listen, stats := freePort(t), freePort(t)
	env["HEADINFER_LISTEN"], env["HEADINFER_STATS"] = listen, stats
	cmd := exec.Command(haproxy, "-db", "-f", path)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	b := &balancer{url: "http://" + listen, stats: "http://" + stats + "/stats;csv", cmd: cmd, log: &lockedBuffer{}}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			b.log.add(sc.Text())
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy log:\n%s", b.log.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for b.upCount(t, "affinity") < replicas {
		if time.Now().After(deadline) {
			t.Fatalf("haproxy never saw %d replicas up: %v\n%s", replicas, b.status(t), b.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return b
}

// status reads the stats page: backend/server → status (UP, DOWN, …).
func (b *balancer) status(t *testing.T) map[string]string {
	resp, err := http.Get(b.stats)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	r := csv.NewReader(resp.Body)
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) == 0 {
		return nil
	}
	col := func(name string) int {
		for i, h := range rows[0] {
			if strings.TrimPrefix(h, "# ") == name {
				return i
			}
		}
		t.Fatalf("the stats page has no %s column", name)
		return -1
	}
	px, sv, st := col("pxname"), col("svname"), col("status")
	out := map[string]string{}
	for _, row := range rows[1:] {
		if len(row) > st {
			out[row[px]+"/"+row[sv]] = row[st]
		}
	}
	return out
}

func (b *balancer) upCount(t *testing.T, backend string) int {
	n := 0
	for k, v := range b.status(t) {
		if strings.HasPrefix(k, backend+"/r") && strings.HasPrefix(v, "UP") {
			n++
		}
	}
	return n
}

// freePort returns a loopback address no one listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// chatTurn is one answered chat request through the balancer.
type chatTurn struct {
	status  int
	replica string
	reply   string
	prompt  int // prompt tokens
	cached  int // of which reused
	err     error
}

// chat posts one chat completion to url with the session key sent as the
// X-Session-Id header (header) or the body's "user" field.
func chat(client *http.Client, url, key string, messages []map[string]string, header bool, maxTokens int) chatTurn {
	body := map[string]any{"messages": messages, "max_tokens": maxTokens, "temperature": 0}
	if !header && key != "" {
		body["user"] = key
	}
	req, err := http.NewRequest("POST", url+"/v1/chat/completions", bytes.NewReader(mustJSON(body)))
	if err != nil {
		return chatTurn{err: err}
	}
	req.Header.Set("Authorization", "Bearer k")
	if header && key != "" {
		req.Header.Set("X-Session-Id", key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return chatTurn{err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	turn := chatTurn{status: resp.StatusCode, replica: resp.Header.Get("X-Replica"), err: err}
	if resp.StatusCode != 200 {
		return turn
	}
	var r struct {
		Choices []struct{ Message struct{ Content string } }
		Usage   struct {
			PromptTokens        int `json:"prompt_tokens"`
			PromptTokensDetails struct {
				CachedTokens int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		}
	}
	if err := json.Unmarshal(raw, &r); err != nil || len(r.Choices) != 1 {
		turn.err = fmt.Errorf("answer %s: %v", raw, err)
		return turn
	}
	turn.reply, turn.prompt, turn.cached = r.Choices[0].Message.Content, r.Usage.PromptTokens, r.Usage.PromptTokensDetails.CachedTokens
	return turn
}

// conversations runs n conversations of turns turns through url, 4 at a
// time, and returns the share of later turns whose whole previous prompt
// was reused, and the cached tokens the answers reported.
func conversations(t *testing.T, url, tag string, n, turns int) (share float64, cached int) {
	t.Helper()
	client := &http.Client{Timeout: time.Minute}
	var mu sync.Mutex
	hits, later := 0, 0
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for c := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			key := fmt.Sprintf("%s-%d", tag, c)
			msgs := []map[string]string{{"role": "user", "content": fmt.Sprintf("Tell me story number %d about %s and a dog named %s.", c, tag, key)}}
			prev := 0
			for turn := range turns {
				r := chat(client, url, key, msgs, c%2 == 0, 10)
				if r.err != nil || r.status != 200 {
					t.Errorf("conversation %s turn %d: %d %v", key, turn, r.status, r.err)
					return
				}
				mu.Lock()
				cached += r.cached
				if turn > 0 {
					later++
					if r.cached >= prev {
						hits++
					}
				}
				mu.Unlock()
				prev = r.prompt
				msgs = append(msgs, map[string]string{"role": "assistant", "content": r.reply},
					map[string]string{"role": "user", "content": fmt.Sprintf("And then what happened in part %d?", turn+2)})
			}
		})
	}
	wg.Wait()
	if later == 0 {
		t.Fatal("no later turns answered")
	}
	return float64(hits) / float64(later), cached
}

// TestReplicasBehindHAProxy runs three replicas behind HAProxy with
// deploy/haproxy/haproxy.cfg and shows: conversations keyed by a session
// id or the "user" field reuse their prefix on later turns (and round
// robin, for comparison, mostly does not); a replica killed mid-run costs
// no request an answer; a replica told to stop finishes its stream before
// it leaves; and a replica serving another model is kept out of the pool.
func TestReplicasBehindHAProxy(t *testing.T) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy is not installed (apt-get install haproxy; .ci/run installs it)")
	}
	cfg, err := os.ReadFile("../deploy/haproxy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	dir := modelsDir(t)
	model := filepath.Join(dir, "stories260K.gguf")
	env := map[string]string{"HEADINFER_MODEL": "stories260K", "HEADINFER_API_KEY": "k"}
	replicas := make([]*serverProc, 3)
	addrs := make([]string, 3)
	start := func(i int, model string) *serverProc {
		_, agent, _ := net.SplitHostPort(freePort(t))
		_, port, _ := net.SplitHostPort(addrs[i])
		env[fmt.Sprintf("HEADINFER_AGENT%d", i+1)] = agent
		return startServer(t, "-m", model, "-c", "512", "--parallel", "4", "--max-queue", "16", "--api-key", "k",
			"--port", port, "--agent-port", agent, "--kv-cache-dir", t.TempDir(), "--grace", "30s")
	}
	for i := range replicas {
		addrs[i] = freePort(t)
		env[fmt.Sprintf("HEADINFER_R%d", i+1)] = addrs[i]
		replicas[i] = start(i, model)
	}
	cachedMetric := func() float64 {
		sum := 0.0
		for _, r := range replicas {
			if r.cmd.ProcessState == nil {
				sum += r.metricKey(t, "k", "headinfer_prefix_cache_cached_tokens_total")
			}
		}
		return sum
	}

	// (1) Affinity against round robin.
	lb := startHAProxy(t, haproxy, string(cfg), env, 3)
	before := cachedMetric()
	affinity, cached := conversations(t, lb.url, "affinity", 20, 4)
	if got := cachedMetric() - before; got != float64(cached) {
		t.Errorf("the replicas' metrics count %v cached tokens, the answers %d", got, cached)
	}
	roundRobinCfg := strings.Replace(string(cfg), "balance hash var(txn.affinity)", "balance roundrobin", 1)
	rr := startHAProxy(t, haproxy, roundRobinCfg, env, 3)
	roundRobin, _ := conversations(t, rr.url, "roundrobin", 20, 4)
	t.Logf("later turns that reused their whole previous prompt: %.0f%% with affinity, %.0f%% with round robin", 100*affinity, 100*roundRobin)
	if affinity < 0.9 {
		t.Errorf("with affinity %.0f%% of later turns reused their prefix, want ≥ 90%%", 100*affinity)
	}

	// (2) A replica killed while requests run: every request is answered,
	// and once HAProxy has seen it go, all of them are 200.
	client := &http.Client{Timeout: time.Minute}
	var wg sync.WaitGroup
	results := make(chan chatTurn, 40)
	killed := make(chan struct{})
	for i := range 40 {
		if i == 12 {
			replicas[1].cmd.Process.Kill()
			close(killed)
		}
		wg.Go(func() {
			key := ""
			if i%2 == 0 {
				key = fmt.Sprintf("kill-%d", i)
			}
			results <- chat(client, lb.url, key, []map[string]string{{"role": "user", "content": fmt.Sprintf("Request %d, once upon a time", i)}}, true, 20)
		})
		time.Sleep(40 * time.Millisecond)
	}
	wg.Wait()
	close(results)
	var failed []int
	for r := range results {
		if r.err != nil {
			t.Errorf("a request while a replica died got no answer: %v", r.err)
		} else if r.status != 200 {
			failed = append(failed, r.status)
		}
	}
	t.Logf("40 requests while r2 was killed: %d answered with an error status %v, none unanswered", len(failed), failed)
	<-replicas[1].exit
	replicas[1].cmd.ProcessState = &os.ProcessState{}
	deadline := time.Now().Add(10 * time.Second)
	for lb.status(t)["affinity/r2"] != "DOWN" {
		if time.Now().After(deadline) {
			t.Fatalf("haproxy still has the killed replica: %v", lb.status(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := range 10 {
		r := chat(client, lb.url, fmt.Sprintf("after-%d", i), []map[string]string{{"role": "user", "content": "Hello"}}, true, 5)
		if r.err != nil || r.status != 200 || r.replica == "r2" {
			t.Errorf("after the kill: %d from %q (%v)", r.status, r.replica, r.err)
		}
	}

	// (3) Draining: a stream running on the replica told to stop ends
	// whole; requests for its key go to another replica meanwhile.
	key := ""
	for i := 0; key == ""; i++ {
		k := fmt.Sprintf("drain-%d", i)
		if r := chat(client, lb.url, k, []map[string]string{{"role": "user", "content": "Hi"}}, true, 1); r.replica == "r1" {
			key = k
		}
		if i > 50 {
			t.Fatal("no key of 50 went to r1")
		}
	}
	req, _ := http.NewRequest("POST", lb.url+"/v1/chat/completions", bytes.NewReader(mustJSON(map[string]any{
		"messages": []map[string]string{{"role": "user", "content": "Tell me a long story."}}, "max_tokens": 400, "temperature": 1, "stream": true})))
	req.Header.Set("Authorization", "Bearer k")
	req.Header.Set("X-Session-Id", key)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("X-Replica") != "r1" {
		t.Fatalf("the stream went to %q, want r1", resp.Header.Get("X-Replica"))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Scan() // the first event: the replica is generating
	replicas[0].cmd.Process.Signal(syscall.SIGTERM)
	events, done := 1, false
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "data: ") {
			events++
			done = done || line == "data: [DONE]"
		}
	}
	if !done {
		t.Errorf("the stream on the draining replica ended without [DONE] after %d events", events)
	}
	r := chat(client, lb.url, key, []map[string]string{{"role": "user", "content": "Hi again"}}, true, 3)
	if r.err != nil || r.status != 200 || r.replica == "r1" {
		t.Errorf("a request for the draining replica's key: %d from %q (%v)", r.status, r.replica, r.err)
	}
	select {
	case <-replicas[0].exit:
		replicas[0].cmd.ProcessState = &os.ProcessState{}
	case <-time.After(30 * time.Second):
		t.Error("the draining replica did not exit")
	}
	t.Logf("the draining replica finished its stream (%d events) and exited", events)

	// (4) A replica serving another model joins at r2's address: it
	// lists its model, and HAProxy keeps it out.
	replicas[1] = start(1, filepath.Join(dir, "llama-2-tiny-random.gguf"))
	status, body := replicas[1].get(t, "/v1/models", "k")
	if status != 200 || !strings.Contains(string(body), "llama-2-tiny-random") {
		t.Errorf("the other model's replica lists %d %s", status, body)
	}
	time.Sleep(3 * time.Second) // several checks
	if st := lb.status(t)["affinity/r2"]; st != "DOWN" {
		t.Errorf("haproxy has the replica with another model %s", st)
	}
	for i := range 10 {
		r := chat(client, lb.url, fmt.Sprintf("model-%d", i), []map[string]string{{"role": "user", "content": "Hello"}}, i%2 == 0, 3)
		if r.err != nil || r.status != 200 || r.replica != "r3" {
			t.Errorf("with one replica of the model left: %d from %q (%v)", r.status, r.replica, r.err)
		}
	}
}
