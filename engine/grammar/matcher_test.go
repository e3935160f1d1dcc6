package grammar

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"headinfer/engine/tokenizer"
)

// bruteAllowed says, token by token, whether m allows id next, by
// advancing a copy of its state over the token's bytes: what the trie
// walk must agree with.
func bruteAllowed(m *Matcher, id int32) bool {
	for _, e := range m.v.eog {
		if e == id {
			return m.CanEnd()
		}
	}
	p := m.v.pieces[id]
	if p == "" {
		return false
	}
	_, err := m.advance(m.cur, p)
	return err == nil
}

// TestAllowedMatchesBruteForce walks random paths through grammars over
// the Llama-2 vocabulary and compares the mask at every step with a check
// of each token on its own: tokens spanning several elements, byte tokens
// that split a character, states that loop on a class, and the end of
// generation; half the paths have
// each mask prepared in the background.
func TestAllowedMatchesBruteForce(t *testing.T) {
	tok, v := llamaVocab(t)
	grammars := []string{
		`root ::= "{" ws "\"name\"" ws ":" ws "\"" [a-z ]{0,8} "\"" ws "}"` + "\nws ::= [ \\n]?",
		`root ::= "héllo" [а-я]{1,3} "😀" [^a-z]?`,
		`root ::= ("yes" | "no" | "maybe") "."`,
		`root ::= [0-9]{1,4} ("." [0-9]+)?`,
		// Classes that lead back to their own state, which the walk
		// takes whole subtrees of at once: every character but two, ASCII
		// letters and space only, and Cyrillic beside them.
		`root ::= "\"" [^"\\]* "\""`,
		`root ::= "<" [^>]* ">" [a-zA-Z ]*`,
		`root ::= [а-яa-z ]* "."`,
		JSON,
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, src := range grammars {
		g := mustParse(t, src)
		for trial := range 4 {
			m := NewMatcher(g, v)
			for step := 0; step < 40; step++ {
				allowed := m.Allowed()
				var ids []int32
				for id := range allowed {
					if allowed[id] != bruteAllowed(m, int32(id)) {
						t.Fatalf("%q trial %d step %d: token %d (%q): mask says %v", src, trial, step, id, tok.Piece(int32(id)), allowed[id])
					}
					if allowed[id] {
						ids = append(ids, int32(id))
					}
				}
				if len(ids) == 0 {
					t.Fatalf("%q: no token allowed at step %d", src, step)
				}
				id := ids[r.IntN(len(ids))]
				if err := m.Accept(id); err != nil {
					t.Fatalf("%q: Accept(%d) of an allowed token: %v", src, id, err)
				}
				if tok.IsEOG(id) {
					break
				}
				if trial%2 == 1 {
					// The next mask computed in the background, as
					// while the device runs a step.
					m.Prepare()
				}
			}
		}
	}
}

// textID finds the token whose vocabulary text is text.
func textID(t *testing.T, tok tokenizer.Tokenizer, text string) int32 {
	t.Helper()
	for id := range tok.VocabSize() {
		if tok.TokenText(int32(id)) == text {
			return int32(id)
		}
	}
	t.Fatalf("no token %q in the vocabulary", text)
	return -1
}

// TestSplitCharacter feeds "é" as its two byte tokens: the first leaves
// a partial character that only grammars with a matching character allow.
func TestSplitCharacter(t *testing.T) {
	tok, v := llamaVocab(t)
	b0, b1 := []int32{textID(t, tok, "<0xC3>")}, []int32{textID(t, tok, "<0xA9>")}
	m := NewMatcher(mustParse(t, `root ::= "é"`), v)
	if !m.Allowed()[b0[0]] {
		t.Fatal("the first byte of é is refused")
	}
	if err := m.Accept(b0[0]); err != nil {
		t.Fatal(err)
	}
	if m.CanEnd() || m.Allowed()[tok.EOS()] {
		t.Fatal("the text can end inside a character")
	}
	allowed := m.Allowed()
	if !allowed[b1[0]] {
		t.Fatal("the second byte of é is refused")
	}
	for id, ok := range allowed {
		if ok && int32(id) != b1[0] {
			t.Errorf("token %d (%q) allowed inside é", id, tok.Piece(int32(id)))
		}
	}
	if err := m.Accept(b1[0]); err != nil {
		t.Fatal(err)
	}
	if !m.CanEnd() || !m.Allowed()[tok.EOS()] {
		t.Fatal("end of generation refused after the whole text")
	}
	// "è" starts with the same byte, "ü" does not.
	m = NewMatcher(mustParse(t, `root ::= [à-ë]`), v)
	c2 := textID(t, tok, "<0xC2>")
	if a := m.Allowed(); !a[b0[0]] || a[c2] {
		t.Errorf("partial characters: 0xC3 allowed %v (want true), 0xC2 allowed %v (want false)", a[b0[0]], a[c2])
	}
}

// TestEndOfGeneration: EOS only when the grammar is complete, and the
// only choice once nothing may follow.
func TestEndOfGeneration(t *testing.T) {
	tok, v := llamaVocab(t)
	m := NewMatcher(mustParse(t, `root ::= "ab" "c"?`), v)
	if m.Allowed()[tok.EOS()] {
		t.Fatal("EOS allowed before anything")
	}
	if err := m.Accept(tok.EOS()); err == nil {
		t.Fatal("Accept(EOS) of an incomplete text succeeded")
	}
	if err := m.AcceptString("ab"); err != nil {
		t.Fatal(err)
	}
	if !m.Allowed()[tok.EOS()] {
		t.Fatal("EOS refused after a complete text")
	}
	if err := m.AcceptString("c"); err != nil {
		t.Fatal(err)
	}
	n := 0
	for id, ok := range m.Allowed() {
		if ok {
			n++
			if int32(id) != tok.EOS() {
				t.Errorf("token %q allowed after the end", tok.Piece(int32(id)))
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d tokens allowed at the end, want EOS alone", n)
	}
	if err := m.Accept(tok.EOS()); err != nil {
		t.Fatal(err)
	}
	if err := m.Accept(tok.EOS()); err == nil {
		t.Fatal("a token after the end was accepted")
	}
}

func TestMask(t *testing.T) {
	tok, v := llamaVocab(t)
	m := NewMatcher(mustParse(t, `root ::= "{\"a\":" [0-9]`), v)
	logits := make([]float32, v.Size())
	if err := m.Mask(logits); err != nil {
		t.Fatal(err)
	}
	brace := []int32{textID(t, tok, "{")}
	for id, l := range logits {
		want := bruteAllowed(m, int32(id))
		if want != !math.IsInf(float64(l), -1) {
			t.Errorf("token %q: logit %v, allowed %v", tok.Piece(int32(id)), l, want)
		}
	}
	if math.IsInf(float64(logits[brace[len(brace)-1]]), -1) {
		t.Error("{ is masked")
	}
	if err := m.Mask(make([]float32, 3)); err == nil {
		t.Error("Mask accepted logits of the wrong length")
	}
	// A grammar whose characters no token spells leaves nothing to draw.
	m = NewMatcher(mustParse(t, `root ::= [\U000E0000]`), NewVocab([]string{"a", "b", ""}, []int32{2}))
	if err := m.Mask(make([]float32, 3)); !errors.Is(err, ErrNoToken) {
		t.Errorf("Mask with no token allowed: %v, want ErrNoToken", err)
	}
}

// TestOverlongUTF8: byte tokens cannot spell an ASCII character in a
// longer form (0xE0 0x81 0xBB for "{") past the grammar.
func TestOverlongUTF8(t *testing.T) {
	tok, v := llamaVocab(t)
	m := NewMatcher(mustParse(t, `root ::= [^a]`), v)
	if m.Allowed()[textID(t, tok, "<0xE0>")] != true {
		t.Fatal("0xE0, the start of U+0800 and above, is refused")
	}
	if err := m.Accept(textID(t, tok, "<0xE0>")); err != nil {
		t.Fatal(err)
	}
	if m.Allowed()[textID(t, tok, "<0x81>")] {
		t.Error("0xE0 0x81, only ever an overlong form, is allowed")
	}
	if !m.Allowed()[textID(t, tok, "<0xA0>")] {
		t.Error("0xE0 0xA0 (U+0800…) is refused")
	}
	if mustParse(t, `root ::= "{"`).Match("\xe0\x81\xbb") {
		t.Error("an overlong { matches \"{\"")
	}
}

// TestTooAmbiguous: a grammar whose stacks double with every character
// fails with ErrTooAmbiguous instead of stalling generation.
func TestTooAmbiguous(t *testing.T) {
	_, v := llamaVocab(t)
	g := mustParse(t, `root ::= "a" | "a" root ")" | "a" root "]"`)
	m := NewMatcher(g, v)
	if err := m.AcceptString("aaaaaaaa"); err != nil {
		t.Fatalf("a few characters: %v", err)
	}
	err := m.AcceptString(strings.Repeat("a", 30))
	if !errors.Is(err, ErrTooAmbiguous) {
		t.Fatalf("30 more: %v, want ErrTooAmbiguous", err)
	}
	if err := m.Mask(make([]float32, v.Size())); !errors.Is(err, ErrTooAmbiguous) {
		t.Errorf("Mask after: %v", err)
	}
}
