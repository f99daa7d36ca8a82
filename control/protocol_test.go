package control

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	for _, ok := range []string{`{"v":1,"op":"status"}`, `{"v":1,"op":"scale","n":4}`, `{"v":1,"op":"stop","now":true}`,
		" {\"op\" : \"reload\", \"v\":1}\r\n", `{"v":1,"op":"stop","now":false,"n":0}`} {
		if _, err := ParseRequest([]byte(ok)); err != nil {
			t.Errorf("ParseRequest(%s): %v", ok, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{`{"v":2,"op":"status"}`, "protocol version 2"},
		{`{"v":1,"op":"reboot"}`, `unknown operation "reboot"`},
		{`{"v":1,"op":"scale","n":0}`, "scale to 0"},
		{`{"v":1,"op":`, "malformed request"},
		{"\x00\xff", "malformed request"},
		{`{"v":1,"op":"status"}` + strings.Repeat(" ", MaxLine), "more than"},
		// Duplicate keys: never "the last one wins".
		{`{"v":1,"op":"status","op":"stop"}`, `duplicate key "op"`},
		{`{"v":1,"v":1,"op":"status"}`, `duplicate key "v"`},
		{`{"v":1,"op":"status","o\u0070":"stop"}`, `duplicate key "op"`},
		{`{"v":1,"op":"scale","n":{"a":1,"a":2}}`, `duplicate key "a" in the value of "n"`},
		{`{"v":1,"op":"scale","n":[{"x":[{"b":1,"b":2}]}]}`, `duplicate key "b" in the value of "x"`},
		// Unknown fields, also those encoding/json would match ignoring case.
		{`{"v":1,"op":"status","force":true}`, `unknown field "force"`},
		{`{"v":1,"op":"status","OP":"stop"}`, `unknown field "OP"`},
		// Data after the object.
		{`{"v":1,"op":"status"} {"v":1,"op":"stop"}`, "data after the request's JSON object"},
		{`{"v":1,"op":"status"}x`, "data after the request's JSON object"},
		{`[{"v":1,"op":"status"}]`, "want a JSON object"},
		{`"status"`, "want a JSON object"},
		{``, "malformed request"},
		{`{"v":1,"op":"scale","n":{"a":1}}`, "malformed request"},
		{`{"v":1,"op":"scale","n":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, "nested more than 32 deep"},
		// Fields with an operation they do not apply to.
		{`{"v":1,"op":"status","n":3}`, `n applies to "scale" only`},
		{`{"v":1,"op":"reload","now":true}`, `now applies to "stop" only`},
	} {
		if _, err := ParseRequest([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRequest(%.40q) = %v, want an error saying %q", tc.in, err, tc.want)
		}
	}
}

// FuzzParseRequest: the server side of the protocol never panics, and a
// request it accepts is one of the operations, round-tripping as JSON.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{`{"v":1,"op":"status"}`, `{"v":1,"op":"scale","n":3}`, `{"v":1,"op":"stop","now":true}`, `{}`, `[1,2]`, `{"v":1,"op":"scale","n":-1}`, "\n",
		`{"v":1,"op":"status","op":"stop"}`, `{"v":1,"op":"scale","n":[{"a":1,"a":2}]}`, `{"v":1,"op":"status"} x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b)
		if err != nil {
			return
		}
		if r.V != Version || (r.Op == OpScale && r.N < 1) {
			t.Fatalf("accepted %q as %+v", b, r)
		}
		again, _ := json.Marshal(r)
		if r2, err := ParseRequest(again); err != nil || r2 != r {
			t.Fatalf("%+v does not round-trip: %+v, %v", r, r2, err)
		}
	})
}
