// Command gotemplate renders an Ollama TEMPLATE the way Ollama's server does, for the project's tests.
//
// It reads one JSON object (or an array of them) on stdin:
//
//	{"template": "...", "messages": [...], "tools": [...], "think": true|false|"high"|null, "mode": "render"|"parse"}
//
// and writes one JSON object (or an array) on stdout:
//
//	{"prompt": "...", "vars": [...], "capabilities": [...], "thinking_tags": ["<think>", "</think>"],
//	 "tool_tag": "<tool_call>", "tool_round_trip": true, "error": "..."}
//
// The data handed to the template mirrors what Ollama hands to its templates (as documented in the
// project's reference/ollama-api.md and read from Ollama's template and api packages): messages collated
// (system messages joined into .System, consecutive messages of one role merged with a blank line, tool
// messages excepted), tools whose Properties are a plain map, tool call Arguments as a plain map, and
// the functions json, currentDate, yesterdayDate and toTypeScriptType. Capabilities are inferred from the
// template the way Ollama does it: tools when .Tools is used, thinking when a .Thinking inside a range
// over .Messages sits between an opening and a closing text tag.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

// ---- input shapes ---------------------------------------------------------------------------------

type request struct {
	Mode     string          `json:"mode"`
	Template string          `json:"template"`
	Messages []inMessage     `json:"messages"`
	Tools    []inTool        `json:"tools"`
	Think    json.RawMessage `json:"think"`
}

type inMessage struct {
	Role       string       `json:"role"`
	Content    string       `json:"content"`
	Thinking   string       `json:"thinking"`
	ToolCalls  []inToolCall `json:"tool_calls"`
	ToolName   string       `json:"tool_name"`
	ToolCallID string       `json:"tool_call_id"`
}

type inToolCall struct {
	ID       string `json:"id"`
	Function struct {
		Index     int            `json:"index"`
		Name      string         `json:"name"`
		Arguments map[string]any `json:"arguments"`
	} `json:"function"`
}

type inTool struct {
	Type     string `json:"type"`
	Items    any    `json:"items"`
	Function struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		Parameters  struct {
			Type       string    `json:"type"`
			Defs       any       `json:"$defs"`
			Items      any       `json:"items"`
			Required   []string  `json:"required"`
			Properties *propList `json:"properties"`
		} `json:"parameters"`
	} `json:"function"`
}

// kind is a JSON Schema type: one name, or a list of names (printed as a string when there is one).
type kind []string

func (k *kind) UnmarshalJSON(data []byte) error {
	var one string
	if json.Unmarshal(data, &one) == nil {
		*k = kind{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(data, &many); err != nil {
		return err
	}
	*k = many
	return nil
}

func (k kind) MarshalJSON() ([]byte, error) {
	if len(k) == 1 {
		return json.Marshal(k[0])
	}
	return json.Marshal([]string(k))
}

func (k kind) String() string {
	switch len(k) {
	case 0:
		return ""
	case 1:
		return k[0]
	}
	return fmt.Sprint([]string(k))
}

// property is one parameter of a tool, with the fields Ollama keeps (others are dropped on input).
type property struct {
	AnyOf       []property `json:"anyOf,omitempty"`
	Type        kind       `json:"type,omitempty"`
	Items       any        `json:"items,omitempty"`
	Description string     `json:"description,omitempty"`
	Enum        []any      `json:"enum,omitempty"`
	Properties  *propList  `json:"properties,omitempty"`
	Required    []string   `json:"required,omitempty"`
}

// propList keeps properties in the order they were given; ToMap hands them out as a plain map.
type propList struct {
	names  []string
	values map[string]property
}

func (p *propList) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("properties must be an object")
	}
	p.values = map[string]property{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		name := tok.(string)
		var value property
		if err := dec.Decode(&value); err != nil {
			return err
		}
		if _, seen := p.values[name]; !seen {
			p.names = append(p.names, name)
		}
		p.values[name] = value
	}
	return nil
}

func (p *propList) ToMap() map[string]property {
	if p == nil {
		return nil
	}
	out := make(map[string]property, len(p.values))
	for k, v := range p.values {
		out[k] = v
	}
	return out
}

func (p propList) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, name := range p.names {
		if i > 0 {
			b.WriteByte(',')
		}
		key, _ := json.Marshal(name)
		value, err := json.Marshal(p.values[name])
		if err != nil {
			return nil, err
		}
		b.Write(key)
		b.WriteByte(':')
		b.Write(value)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// ---- the values a template sees ----------------------------------------------------------------

type tmplTools []tmplTool

func (t tmplTools) String() string { return marshal(t) }

type tmplTool struct {
	Type     string       `json:"type"`
	Items    any          `json:"items,omitempty"`
	Function tmplFunction `json:"function"`
}

func (t tmplTool) String() string { return marshal(t) }

type tmplFunction struct {
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Parameters  tmplParams `json:"parameters"`
}

type tmplParams struct {
	Type       string    `json:"type"`
	Defs       any       `json:"$defs,omitempty"`
	Items      any       `json:"items,omitempty"`
	Required   []string  `json:"required,omitempty"`
	Properties tmplProps `json:"properties"`
}

type tmplProps map[string]property

func (p tmplProps) String() string {
	if p == nil {
		return "{}"
	}
	return marshal(p)
}

type tmplArgs map[string]any

func (a tmplArgs) String() string {
	if a == nil {
		return "{}"
	}
	return marshal(a)
}

type tmplCall struct {
	ID       string
	Function tmplCallFunction
}

type tmplCallFunction struct {
	Index     int
	Name      string
	Arguments tmplArgs
}

type tmplMessage struct {
	Role       string
	Content    string
	Thinking   string
	Images     []any
	ToolCalls  []tmplCall
	ToolName   string
	ToolCallID string
}

func marshal(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// collate joins system messages and merges consecutive messages of one role (tool messages excepted):
// only the first message of a run keeps its thinking and tool calls, the others add their content.
func collate(in []inMessage) (string, []*tmplMessage) {
	var system []string
	var out []*tmplMessage
	for _, m := range in {
		role := strings.ToLower(m.Role)
		if role == "system" {
			system = append(system, m.Content)
		}
		if n := len(out); n > 0 && out[n-1].Role == role && role != "tool" {
			out[n-1].Content += "\n\n" + m.Content
			continue
		}
		msg := &tmplMessage{Role: role, Content: m.Content, Thinking: m.Thinking, ToolName: m.ToolName, ToolCallID: m.ToolCallID}
		for _, c := range m.ToolCalls {
			call := tmplCall{ID: c.ID}
			call.Function.Index = c.Function.Index
			call.Function.Name = c.Function.Name
			call.Function.Arguments = tmplArgs(c.Function.Arguments)
			msg.ToolCalls = append(msg.ToolCalls, call)
		}
		out = append(out, msg)
	}
	return strings.Join(system, "\n\n"), out
}

func convertTools(in []inTool) tmplTools {
	if in == nil {
		return nil
	}
	out := make(tmplTools, len(in))
	for i, t := range in {
		p := t.Function.Parameters
		out[i] = tmplTool{
			Type:  t.Type,
			Items: t.Items,
			Function: tmplFunction{
				Name:        t.Function.Name,
				Description: t.Function.Description,
				Parameters: tmplParams{
					Type: p.Type, Defs: p.Defs, Items: p.Items, Required: p.Required,
					Properties: tmplProps(p.Properties.ToMap()),
				},
			},
		}
	}
	return out
}

// ---- parsing and what Ollama infers from a template --------------------------------------------------

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
	"currentDate":   func(args ...string) string { return time.Now().Format("2006-01-02") },
	"yesterdayDate": func(args ...string) string { return time.Now().AddDate(0, 0, -1).Format("2006-01-02") },
	"toTypeScriptType": func(v any) string {
		p, ok := v.(property)
		if !ok || len(p.Type) != 1 {
			return "any"
		}
		names := map[string]string{"string": "string", "number": "number", "integer": "number", "boolean": "boolean"}
		if name, ok := names[p.Type[0]]; ok {
			return name
		}
		return "any"
	},
}

func parseTemplate(text string) (*template.Template, []string, error) {
	t, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(text)
	if err != nil {
		return nil, nil, err
	}
	vars, err := identifiers(t)
	if err != nil {
		return nil, nil, err
	}
	if !contains(vars, "messages") && !contains(vars, "response") {
		// Ollama appends {{ .Response }} to templates that use neither
		t, err = template.New("").Option("missingkey=zero").Funcs(funcs).Parse(text + "{{ .Response }}")
		if err != nil {
			return nil, nil, err
		}
	}
	return t, vars, nil
}

// identifiers lists, lower-cased and sorted, every field and variable name used in any of the templates.
func identifiers(t *template.Template) ([]string, error) {
	seen := map[string]bool{}
	var walk func(n parse.Node) error
	walk = func(n parse.Node) error {
		switch n := n.(type) {
		case *parse.ListNode:
			for _, c := range n.Nodes {
				if err := walk(c); err != nil {
					return err
				}
			}
		case *parse.ActionNode:
			if n.Pipe == nil {
				return errors.New("undefined action in template")
			}
			return walk(n.Pipe)
		case *parse.TemplateNode:
			if n.Pipe == nil {
				return errors.New("undefined template specified")
			}
			return walk(n.Pipe)
		case *parse.IfNode:
			return walkBranch(&n.BranchNode, walk)
		case *parse.RangeNode:
			return walkBranch(&n.BranchNode, walk)
		case *parse.WithNode:
			return walkBranch(&n.BranchNode, walk)
		case *parse.PipeNode:
			for _, cmd := range n.Cmds {
				for _, arg := range cmd.Args {
					if err := walk(arg); err != nil {
						return err
					}
				}
			}
		case *parse.FieldNode:
			for _, id := range n.Ident {
				seen[strings.ToLower(id)] = true
			}
		case *parse.VariableNode:
			for _, id := range n.Ident {
				seen[strings.ToLower(id)] = true
			}
		}
		return nil
	}
	for _, tt := range t.Templates() {
		if tt.Tree == nil {
			continue
		}
		if err := walk(tt.Tree.Root); err != nil {
			return nil, err
		}
	}
	names := make([]string, 0, len(seen))
	for name := range seen {
		names = append(names, name)
	}
	sort.Strings(names)
	return names, nil
}

func walkBranch(b *parse.BranchNode, walk func(parse.Node) error) error {
	if b.Pipe == nil {
		return errors.New("undefined branch")
	}
	if err := walk(b.Pipe); err != nil {
		return err
	}
	for _, list := range []*parse.ListNode{b.List, b.ElseList} {
		if list != nil {
			if err := walk(list); err != nil {
				return err
			}
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// children lists the nodes below n in the order Ollama's heuristics visit them.
func children(n parse.Node) []parse.Node {
	var out []parse.Node
	branch := func(b *parse.BranchNode) {
		if b.Pipe != nil {
			out = append(out, b.Pipe)
		}
		if b.List != nil {
			out = append(out, b.List)
		}
		if b.ElseList != nil {
			out = append(out, b.ElseList)
		}
	}
	switch n := n.(type) {
	case *parse.ListNode:
		out = append(out, n.Nodes...)
	case *parse.IfNode:
		branch(&n.BranchNode)
	case *parse.RangeNode:
		branch(&n.BranchNode)
	case *parse.WithNode:
		branch(&n.BranchNode)
	case *parse.ActionNode:
		out = append(out, n.Pipe)
	case *parse.TemplateNode:
		if n.Pipe != nil {
			out = append(out, n.Pipe)
		}
	case *parse.PipeNode:
		for _, c := range n.Cmds {
			out = append(out, c)
		}
	case *parse.CommandNode:
		out = append(out, n.Args...)
	}
	return out
}

func usesField(n parse.Node, name string) bool {
	if f, ok := n.(*parse.FieldNode); ok && len(f.Ident) > 0 && f.Ident[0] == name {
		return true
	}
	for _, c := range children(n) {
		if usesField(c, name) {
			return true
		}
	}
	return false
}

// thinkingTags finds the text around .Thinking inside a range over .Messages: the first and last text
// of the nearest list holding it. Later matches overwrite earlier ones, and only text nodes count.
func thinkingTags(t *template.Template) (string, string) {
	var opening, closing string
	var path []parse.Node
	var visit func(n parse.Node)
	visit = func(n parse.Node) {
		path = append(path, n)
		defer func() { path = path[:len(path)-1] }()
		if f, ok := n.(*parse.FieldNode); ok && len(f.Ident) > 0 && f.Ident[0] == "Thinking" {
			if inMessagesRange(path) {
				for i := len(path) - 1; i >= 0; i-- {
					list, ok := path[i].(*parse.ListNode)
					if !ok {
						continue
					}
					if first, ok := list.Nodes[0].(*parse.TextNode); ok {
						opening = strings.TrimSpace(first.String())
					}
					if last, ok := list.Nodes[len(list.Nodes)-1].(*parse.TextNode); ok {
						closing = strings.TrimSpace(last.String())
					}
					break
				}
			}
		}
		for _, c := range children(n) {
			visit(c)
		}
	}
	visit(t.Tree.Root)
	return opening, closing
}

func inMessagesRange(path []parse.Node) bool {
	for i := len(path) - 1; i >= 0; i-- {
		if r, ok := path[i].(*parse.RangeNode); ok {
			return usesField(r.Pipe, "Messages")
		}
	}
	return false
}

// toolTag is the text a tool call starts with: the first non-blank text inside the first
// {{ if ... .ToolCalls ... }}, up to a '{'; "{" when there is none.
func toolTag(t *template.Template) string {
	node := findToolCallsIf(t.Tree.Root.Nodes)
	if node == nil {
		return "{"
	}
	text := firstText(node.List.Nodes)
	if text == nil {
		return "{"
	}
	tag, _, _ := strings.Cut(strings.ReplaceAll(string(text.Text), "\r\n", "\n"), "{")
	if tag = strings.TrimSpace(tag); tag == "" {
		return "{"
	}
	return tag
}

func findToolCallsIf(nodes []parse.Node) *parse.IfNode {
	for _, n := range nodes {
		var lists []*parse.ListNode
		switch n := n.(type) {
		case *parse.IfNode:
			for _, cmd := range n.Pipe.Cmds {
				for _, arg := range cmd.Args {
					if f, ok := arg.(*parse.FieldNode); ok && contains(f.Ident, "ToolCalls") {
						return n
					}
				}
			}
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.RangeNode:
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.WithNode:
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.ListNode:
			lists = []*parse.ListNode{n}
		}
		for _, l := range lists {
			if l != nil {
				if found := findToolCallsIf(l.Nodes); found != nil {
					return found
				}
			}
		}
	}
	return nil
}

func firstText(nodes []parse.Node) *parse.TextNode {
	for _, n := range nodes {
		var lists []*parse.ListNode
		switch n := n.(type) {
		case *parse.TextNode:
			if len(bytes.TrimSpace(n.Text)) > 0 {
				return n
			}
			continue
		case *parse.ActionNode:
			return nil
		case *parse.ListNode:
			if text := firstText(n.Nodes); text != nil {
				return text
			}
			continue
		case *parse.IfNode:
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.RangeNode:
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.WithNode:
			lists = []*parse.ListNode{n.List, n.ElseList}
		default:
			continue
		}
		for _, l := range lists {
			if l != nil {
				if text := firstText(l.Nodes); text != nil {
					return text
				}
			}
		}
		return nil
	}
	return nil
}

// ---- one request -------------------------------------------------------------------------------

type response struct {
	Prompt        string    `json:"prompt"`
	Vars          []string  `json:"vars"`
	Capabilities  []string  `json:"capabilities"`
	ThinkingTags  [2]string `json:"thinking_tags"`
	ToolTag       string    `json:"tool_tag"`
	ToolRoundTrip bool      `json:"tool_round_trip"`
	Error         string    `json:"error,omitempty"`
}

func handle(req request) response {
	var out response
	t, vars, err := parseTemplate(req.Template)
	if err != nil {
		out.Error = "template error: " + err.Error()
		return out
	}
	out.Vars = vars
	out.Capabilities = []string{"completion"}
	if contains(vars, "tools") {
		out.Capabilities = append(out.Capabilities, "tools")
	}
	open, close := thinkingTags(t)
	out.ThinkingTags = [2]string{open, close}
	thinks := open != "" && close != ""
	if thinks {
		out.Capabilities = append(out.Capabilities, "thinking")
	}
	out.ToolTag = toolTag(t)
	out.ToolRoundTrip = contains(vars, "tools") && contains(vars, "toolcalls") &&
		(strings.Contains(req.Template, `eq .Role "tool"`) || strings.Contains(req.Template, "tool_response"))
	if req.Mode == "parse" {
		return out
	}

	values, err := chatValues(req, thinks)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	var b bytes.Buffer
	if err := t.Execute(&b, values); err != nil {
		out.Error = "template execute: " + err.Error()
		return out
	}
	out.Prompt = b.String()
	return out
}

// chatValues builds what /api/chat hands the template: a thinking model thinks unless told not to,
// and asking a model without thinking to think is refused.
func chatValues(req request, thinks bool) (map[string]any, error) {
	var think any
	if len(req.Think) > 0 && string(req.Think) != "null" {
		if err := json.Unmarshal(req.Think, &think); err != nil {
			return nil, err
		}
	}
	if think == nil && thinks {
		think = true
	}
	isSet, on, level := think != nil, false, ""
	switch v := think.(type) {
	case bool:
		on = v
	case string:
		on, level = true, v
	}
	if on && !thinks {
		return nil, errors.New("model does not support thinking")
	}
	system, messages := collate(req.Messages)
	return map[string]any{
		"System":     system,
		"Messages":   messages,
		"Tools":      convertTools(req.Tools),
		"Response":   "",
		"Think":      on,
		"ThinkLevel": level,
		"IsThinkSet": isSet,
	}, nil
}

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	trimmed := bytes.TrimSpace(data)
	var result any
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var reqs []request
		if err := json.Unmarshal(trimmed, &reqs); err != nil {
			fmt.Fprintln(os.Stderr, "bad input:", err)
			os.Exit(2)
		}
		outs := make([]response, len(reqs))
		for i, r := range reqs {
			outs[i] = handle(r)
		}
		result = outs
	} else {
		var req request
		if err := json.Unmarshal(trimmed, &req); err != nil {
			fmt.Fprintln(os.Stderr, "bad input:", err)
			os.Exit(2)
		}
		result = handle(req)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(result); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
