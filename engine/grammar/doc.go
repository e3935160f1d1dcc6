// Package grammar constrains generation to a formal language: a grammar
// in GBNF (llama.cpp's notation) is compiled to a pushdown automaton, and
// at each step a Matcher says which tokens of the vocabulary may come next,
// so that the sampler never draws a token that leads out of the language.
//
// The automaton's state is a set of stacks of positions in the grammar's
// rules, as in llama.cpp's llama-grammar: the top of each stack is the
// character class to match next, the entries below it what follows once
// that rule is done. A character advances every stack whose top matches it
// and drops the others; a stack that empties has matched the whole root
// rule, and generation may end there.
//
// Tokens are byte strings, grammars speak of characters. The allowed tokens
// are found by walking a trie of the vocabulary's byte strings from the
// current state: a byte that no stack can take prunes the whole subtree
// below it, so the walk visits only the prefixes the grammar allows.
// Characters split across tokens are carried as a partial UTF-8 state.
//
// Stacks and sets of stacks are interned, and each set remembers where each
// character takes it, so a step costs a table look-up per trie node once a
// state has been seen: that keeps a mask over a 32K vocabulary within a
// millisecond (BenchmarkMask).
package grammar
