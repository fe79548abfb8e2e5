package fdn

import (
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func vectorsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "docs", "protocol", "vectors")
}

func TestEveryVectorDecodesAndEncodesByteIdentical(t *testing.T) {
	for _, dir := range []string{vectorsDir(), filepath.Join(vectorsDir(), "cuda_ipc")} {
		passed, failures, err := CheckVectors(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range failures {
			t.Errorf("vector %s: %s", f.Vector, f.Why)
		}
		if passed == 0 {
			t.Fatalf("no vector in %s passed", dir)
		}
	}
}

func TestAnExpectationFieldTheHarnessDoesNotCompareIsRefused(t *testing.T) {
	src := filepath.Join(vectorsDir(), "request_multi")
	raw, err := os.ReadFile(src + ".json")
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(src + ".bin")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "request_multi.bin"), bin, 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(text string) error {
		if err := os.WriteFile(filepath.Join(dir, "request_multi.json"), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return checkVector(filepath.Join(dir, "request_multi.json"))
	}
	if err := write(string(raw)); err != nil {
		t.Fatalf("the copy of request_multi fails: %v", err)
	}
	extra := strings.Replace(string(raw), `"request_id"`, `"priority": 3, "request_id"`, 1)
	if extra == string(raw) {
		t.Fatal("request_multi.json has no request_id to put a field beside")
	}
	err = write(extra)
	if err == nil || !strings.Contains(err.Error(), `unknown field "priority"`) {
		t.Fatalf("an expectation with a field no compare reads: %v", err)
	}
}

func TestLayoutPlacesTensorsAt64ByteBoundaries(t *testing.T) {
	ts := []Tensor{{Name: "a", DType: FP32, NDim: 2, Shape: [8]uint64{2, 3}}, {Name: "b", DType: UINT8, NDim: 1, Shape: [8]uint64{5}}}
	end, err := Layout(ts, RequestPayloadSize(2, 0, 0))
	if err != nil || ts[0].DataOffset != 704 || ts[0].DataSize != 24 || ts[1].DataOffset != 768 || end != 832 {
		t.Fatalf("layout: %+v end %d err %v", ts, end, err)
	}
}

func TestCRCIsZlibs(t *testing.T) {
	if crc32.ChecksumIEEE([]byte("123456789")) != 0xCBF43926 {
		t.Fatal("hash/crc32 IEEE is not zlib's CRC-32")
	}
}

func TestStatusNames(t *testing.T) {
	if ModelNotFound.String() != "MODEL_NOT_FOUND" || Status(99).String() != "INTERNAL" || ServerUnavailable != 10 {
		t.Fatal("status names disagree with section 9")
	}
}

func TestParamsMustBeAFlatObject(t *testing.T) {
	for raw, want := range map[string]bool{`{"a":1,"b":"x","c":true}`: true, `{"a":[1]}`: false, `{"a":null}`: false, `[1]`: false} {
		if ParamsValid([]byte(raw)) != want {
			t.Errorf("ParamsValid(%s) != %v", raw, want)
		}
	}
}

// Section 8 step 10 (I-JSON), beyond the vectors: numbers at their edges, surrogates, names
// compared once unescaped, whitespace and a BOM.
func TestParamsAreIJSON(t *testing.T) {
	for raw, want := range map[string]bool{
		`{"a":9007199254740991,"b":-9007199254740991,"c":-0}`:   true,
		`{"a":9007199254740992}`:                                false,
		`{"a":-10000000000000000}`:                              false,
		`{"a":9007199254740993.0,"b":1e16,"c":1E+5,"d":0.5e-3}`: true,
		`{"a":1e-400,"b":0e99999999999999999999}`:               true,
		`{"a":1.7976931348623158e308}`:                          true,
		`{"a":1.7976931348623159e308}`:                          false,
		`{"a":-1e99999999999999999999}`:                         false,
		`{"a":"\ud800\u0041"}`:                                  false,
		`{"a":"\udfff"}`:                                        false,
		`{"a":"\ud83d\ude00","\u0000":"\u0000"}`:                true,
		"{\"a\":\"\\\x00\"}":                                    false,
		`{"b":1,"a":2,"b":3}`:                                   false,
		"{\"\\u00e9\":1,\"\u00e9\":2}":                          false,
		`{"":1,"\u00e9":2,"e":3}`:                               true,
		" \t\r\n{ \"a\" : 1 }\n":                                true,
		"\ufeff{\"a\":1}":                                       false,
		`{"a":01}`:                                              false,
	} {
		if ParamsValid([]byte(raw)) != want {
			t.Errorf("ParamsValid(%q) != %v (%s)", raw, want, ParamsProblem([]byte(raw)))
		}
	}
}

func TestDecoderRejectsAShortArea(t *testing.T) {
	var r Response
	if err := DecodeResponse(make([]byte, 64), DefaultLimits, &r); CodeOf(err) != InvalidInput {
		t.Fatalf("got %v", err)
	}
}

// The longest server name, the highest channel index (4095), a 7-digit pid and an 11-digit
// generation make a 63-byte data name; one byte more is refused, never cut.
func TestTheLongestDataNameFitsAndOneMoreByteIsRefused(t *testing.T) {
	server := strings.Repeat("x", ServerNameMax)
	name, err := dataName(server, 4095, 4194304, 99999999999)
	if err != nil || len(name) != 63 || name != "/fdn-"+server+"-d4095-4194304-99999999999" {
		t.Fatalf("%q %v", name, err)
	}
	if name, err := dataName(server, 4095, 4194304, 100000000000); err == nil {
		t.Fatalf("a 64-byte data name was accepted: %q", name)
	}
	if name, err := dataName(server+"x", 4095, 4194304, 99999999999); err == nil || name != "" {
		t.Fatalf("a 33-character server's data name was accepted: %q", name)
	}
}

func TestConnectRefusesAServerNameOnePastTheLimit(t *testing.T) {
	c, err := Connect(strings.Repeat("x", ServerNameMax+1), Options{})
	if c != nil || err == nil || !strings.Contains(err.Error(), "must be 1-32 characters of [A-Za-z0-9_]") {
		t.Fatalf("%v %v", c, err)
	}
	if e, ok := err.(*Error); !ok || e.Code != InvalidInput {
		t.Fatalf("not INVALID_INPUT: %#v", err)
	}
}

// Two tensors of 2^63 bytes end past 2^64: the end wrapped to a few hundred bytes, so LoanBegin
// fitted them in the area and LoanData(1) panicked (slice bounds out of range).
func TestLayoutRefusesAnEndPast2To64(t *testing.T) {
	ts := []Tensor{{Name: "a", DType: UINT8, NDim: 1, Shape: [8]uint64{1 << 63}}, {Name: "b", DType: UINT8, NDim: 1, Shape: [8]uint64{1 << 63}}}
	if end, err := Layout(ts, RequestPayloadSize(2, 0, 0)); CodeOf(err) != InvalidInput {
		t.Fatalf("two tensors of 2^63 bytes: end %d, %v", end, err)
	}
	one := []Tensor{{Name: "a", DType: UINT8, NDim: 1, Shape: [8]uint64{^uint64(0) - 64}}}
	if end, err := Layout(one, RequestPayloadSize(1, 0, 0)); CodeOf(err) != InvalidInput {
		t.Fatalf("a tensor of 2^64 - 65 bytes: end %d, %v", end, err)
	}
	one[0].Shape[0] = 1 << 62 // large, but it fits: laid out as before
	if end, err := Layout(one, RequestPayloadSize(1, 0, 0)); err != nil || end != 448+1<<62 {
		t.Fatalf("a tensor of 2^62 bytes: end %d, %v", end, err)
	}
}
