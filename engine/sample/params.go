// Package sample picks the next token from a model's logits: greedy, or
// drawn after llama.cpp's default chain of penalties → top-k →
// top-p → min-p → temperature, with a seeded generator so that a seed
// reproduces a generation.
package sample

import (
	"fmt"
	"math"
)

// DefaultRepeatLastN is how many recent tokens the repetition penalty looks
// at when Params.RepeatLastN is 0.
const DefaultRepeatLastN = 64

// Params configures a Sampler. The zero value is greedy decoding; each
// filter is off at its zero value.
type Params struct {
	// Temperature divides the logits before drawing; 0 picks the argmax.
	Temperature float32
	// TopK keeps the K most likely tokens; 0 keeps all.
	TopK int
	// TopP keeps the most likely tokens whose probabilities first add up
	// to at least TopP; 0 and 1 keep all.
	TopP float32
	// MinP drops tokens less likely than MinP times the most likely one;
	// 0 keeps all.
	MinP float32
	// RepeatPenalty makes recently seen tokens less likely: a positive
	// logit is divided by it and a negative one multiplied. 0 and 1 are off.
	RepeatPenalty float32
	// PresencePenalty is subtracted from the logit of every token that
	// occurs in the penalized history, once (OpenAI's presence_penalty);
	// 0 is off.
	PresencePenalty float32
	// FrequencyPenalty is subtracted from a token's logit once per
	// occurrence in the penalized history (OpenAI's frequency_penalty); 0
	// is off.
	FrequencyPenalty float32
	// RepeatLastN is how many of the latest history tokens the penalties
	// cover: 0 means DefaultRepeatLastN, -1 the whole history.
	RepeatLastN int
	// Seed seeds the generator; the same seed and inputs give the same tokens.
	Seed uint64
	// LogitBias is added to the logits of the tokens it names before
	// anything else (OpenAI's logit_bias): -100 all but bans a token, 100
	// all but forces it. Ids outside the logits are ignored; callers that
	// take ids from users check them against the vocabulary first.
	LogitBias map[int32]float32
}

// Defaults returns llama.cpp's default sampling settings.
func Defaults() Params {
	return Params{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1, RepeatLastN: DefaultRepeatLastN}
}

// Greedy reports whether sampling with p is the argmax of the raw logits,
// which a caller may then compute on the device instead of reading the
// logits back.
func (p Params) Greedy() bool {
	return (p.Temperature == 0 || p.TopK == 1) && !p.penalizes() && len(p.LogitBias) == 0
}

func (p Params) penalizes() bool {
	return p.RepeatPenalty != 0 && p.RepeatPenalty != 1 || p.PresencePenalty != 0 || p.FrequencyPenalty != 0
}

// Validate reports the first setting out of range.
func (p Params) Validate() error {
	finite := func(x float32) bool { return !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0) }
	switch {
	case !finite(p.Temperature) || p.Temperature < 0:
		return fmt.Errorf("sample: temperature %v must be 0 (greedy) or positive", p.Temperature)
	case p.TopK < 0:
		return fmt.Errorf("sample: top-k %d must be 0 (off) or positive", p.TopK)
	case !finite(p.TopP) || p.TopP < 0 || p.TopP > 1:
		return fmt.Errorf("sample: top-p %v must be in (0, 1] (or 0 for off)", p.TopP)
	case !finite(p.MinP) || p.MinP < 0 || p.MinP > 1:
		return fmt.Errorf("sample: min-p %v must be in [0, 1]", p.MinP)
	case !finite(p.RepeatPenalty) || p.RepeatPenalty < 0:
		return fmt.Errorf("sample: repeat penalty %v must be positive (1 is off)", p.RepeatPenalty)
	case !finite(p.PresencePenalty) || !finite(p.FrequencyPenalty):
		return fmt.Errorf("sample: presence penalty %v and frequency penalty %v must be finite", p.PresencePenalty, p.FrequencyPenalty)
	case p.RepeatLastN < -1:
		return fmt.Errorf("sample: repeat-last-n %d must be -1 (all), 0 (default %d) or positive", p.RepeatLastN, DefaultRepeatLastN)
	}
	for id, b := range p.LogitBias {
		if id < 0 || !finite(b) {
			return fmt.Errorf("sample: logit bias %v for token %d: ids must be ≥ 0 and biases finite", b, id)
		}
	}
	return nil
}
