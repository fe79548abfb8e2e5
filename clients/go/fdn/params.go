package fdn

// params.go: the parameters' JSON (section 8 step 10): one object whose values are strings,
// numbers and booleans, read as I-JSON (RFC 7493), so that every reader gets the same members
// with the same values. encoding/json is not strict enough (it takes a name twice, last wins,
// and turns an escaped lone surrogate into U+FFFD), so a flat object is scanned here.

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxParamInt bounds a parameter integer (a number without fraction or exponent): within
// ±(2^53 − 1), which every double holds exactly.
const MaxParamInt = 1<<53 - 1

// ParamsValid reports whether raw is a JSON object of strings, numbers and booleans (8.10).
func ParamsValid(raw []byte) bool {
	return ParamsProblem(raw) == ""
}

// ParamsProblem says why raw is not the protocol's parameters (section 8 step 10), or "".
func ParamsProblem(raw []byte) string {
	if !utf8.Valid(raw) {
		return "params are not valid UTF-8 JSON"
	}
	p := paramScanner{s: raw}
	p.ws()
	if !p.eat('{') {
		return "params must be a JSON object of strings, numbers and booleans"
	}
	p.ws()
	if !p.eat('}') {
		seen := map[string]struct{}{}
		for {
			p.ws()
			key, why := p.str()
			if why != "" {
				return "params: " + why
			}
			if _, dup := seen[key]; dup {
				return fmt.Sprintf("params name %q twice", key)
			}
			seen[key] = struct{}{}
			p.ws()
			if !p.eat(':') {
				return "params are not valid UTF-8 JSON"
			}
			p.ws()
			if why := p.value(); why != "" {
				return fmt.Sprintf("params: %q %s", key, why)
			}
			p.ws()
			if p.eat(',') {
				continue
			}
			if p.eat('}') {
				break
			}
			return "params are not valid UTF-8 JSON"
		}
	}
	p.ws()
	if p.i != len(p.s) {
		return "params are not valid UTF-8 JSON (bytes after the object)"
	}
	return ""
}

type paramScanner struct {
	s []byte
	i int
}

func (p *paramScanner) ws() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
}

func (p *paramScanner) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *paramScanner) lit(word string) bool {
	if strings.HasPrefix(string(p.s[p.i:]), word) {
		p.i += len(word)
		return true
	}
	return false
}

// value checks one member's value; "" when it is a string, a number or a boolean as 8.10 says.
func (p *paramScanner) value() string {
	if p.i >= len(p.s) {
		return "has no value"
	}
	switch c := p.s[p.i]; {
	case c == '"':
		_, why := p.str()
		return why
	case c == 't':
		if p.lit("true") {
			return ""
		}
	case c == 'f':
		if p.lit("false") {
			return ""
		}
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case c == '[' || c == '{' || c == 'n':
		return "is not a string, number or boolean"
	}
	return "is not valid JSON"
}

func (p *paramScanner) digits() int {
	at := p.i
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	return p.i - at
}

// number: JSON's grammar; an integer (no fraction, no exponent) within ±MaxParamInt, any other
// number finite once rounded to a double (one too small for a double rounds to 0 and passes).
func (p *paramScanner) number() string {
	start := p.i
	p.eat('-')
	intAt := p.i
	n := p.digits()
	if n == 0 || (n > 1 && p.s[intAt] == '0') {
		return "is not a valid JSON number"
	}
	integer := true
	if p.eat('.') {
		integer = false
		if p.digits() == 0 {
			return "is not a valid JSON number"
		}
	}
	if p.eat('e') || p.eat('E') {
		integer = false
		if !p.eat('+') {
			p.eat('-')
		}
		if p.digits() == 0 {
			return "is not a valid JSON number"
		}
	}
	text := string(p.s[start:p.i])
	if integer {
		if v, err := strconv.ParseUint(text[intAt-start:], 10, 64); n > 16 || err != nil || v > MaxParamInt {
			return fmt.Sprintf("is the integer %.40s, outside ±(2^53 − 1)", text)
		}
		return ""
	}
	if f, _ := strconv.ParseFloat(text, 64); math.IsInf(f, 0) {
		return fmt.Sprintf("is %.40s, beyond the range of a double", text)
	}
	return ""
}

func (p *paramScanner) hex4() (rune, bool) {
	if len(p.s)-p.i < 4 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(p.s[p.i:p.i+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	p.i += 4
	return rune(v), true
}

// str reads a JSON string (p.s[p.i] is its opening quote), unescaped; every escaped surrogate
// must be half of a pair, high then low: strings are Unicode scalar values.
func (p *paramScanner) str() (string, string) {
	if !p.eat('"') {
		return "", "a name is not a JSON string"
	}
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '"':
			return b.String(), ""
		case c < 0x20:
			return "", "a string holds a control character (not valid JSON)"
		case c != '\\':
			b.WriteByte(c)
			continue
		}
		if p.i >= len(p.s) {
			break
		}
		e := p.s[p.i]
		p.i++
		if at := strings.IndexByte(`"\/bfnrt`, e); at >= 0 {
			b.WriteByte("\"\\/\b\f\n\r\t"[at])
			continue
		}
		if e != 'u' {
			return "", "a string holds a bad escape (not valid JSON)"
		}
		r, ok := p.hex4()
		if !ok {
			return "", "a string holds a bad \\u escape (not valid JSON)"
		}
		if r >= 0xDC00 && r < 0xE000 {
			return "", "a string holds a lone surrogate (not a Unicode scalar value)"
		}
		if r >= 0xD800 && r < 0xDC00 {
			if !p.eat('\\') || !p.eat('u') {
				return "", "a string holds a lone surrogate (not a Unicode scalar value)"
			}
			lo, ok := p.hex4()
			if !ok || lo < 0xDC00 || lo >= 0xE000 {
				return "", "a string holds a lone surrogate (not a Unicode scalar value)"
			}
			r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
		}
		b.WriteRune(r)
	}
	return "", "a string is not terminated (not valid JSON)"
}
