package grammar

// JSON is a GBNF grammar of one JSON value (an object at the root, as
// OpenAI's response_format json_object asks), with whitespace bounded so
// that a model cannot fill its whole budget with blanks, and numbers of at
// most 16 integer and 16 fraction digits.
const JSON = `root ::= ws object
value ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? "}" ws
array ::= "[" ws ( value ( "," ws value )* )? "]" ws
string ::= "\"" char* "\"" ws
char ::= [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )
number ::= "-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )? ws
ws ::= | " " | "\n" [ \t]{0,20}
`
