; int19.asm -- INT 19h, the bootstrap loader: SeaBIOS 1.16 reads sector 0
; of drive 0x80 again with INT 13h (AH=02 to 07C0:0000) and enters it as at
; power-on.  Pass 1 (the byte at 0000:0500 is 0) scrambles the registers
; and calls INT 19h; pass 2 writes this sector back to the disk with the
; byte at 0x1FD patched (INT 13h AH=03) and calls INT 19h again; pass 3
; (the patched byte) exits.  Each pass first sends to debugcon the pass
; number, AX BX CX DX SI DI BP SP DS ES SS and FLAGS as it found them.
; tests/data/kvm/record.sh re-records it.
BITS 16
ORG 0x7C00
DBGC equ 0xE9
SAVE equ 0x600
  mov [cs:SAVE], ax
  mov [cs:SAVE + 2], bx
  mov [cs:SAVE + 4], cx
  mov [cs:SAVE + 6], dx
  mov [cs:SAVE + 8], si
  mov [cs:SAVE + 10], di
  mov [cs:SAVE + 12], bp
  mov [cs:SAVE + 14], sp
  mov [cs:SAVE + 16], ds
  mov [cs:SAVE + 18], es
  mov [cs:SAVE + 20], ss
  pushf
  pop word [cs:SAVE + 22]
  cli
  xor ax, ax
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov sp, 0x7000
  cld
  mov al, [0x500]
  inc al
  cmp byte [patched], 'B'
  jne .p
  mov al, 3
.p:
  out DBGC, al
  mov si, SAVE
  mov cx, 24
.s:
  lodsb
  out DBGC, al
  loop .s
  cmp byte [patched], 'B'
  je done
  cmp byte [0x500], 0
  jne pass2
  ; pass 1: scramble, then reboot
  mov byte [0x500], 1
  mov ax, 0x1111
  mov bx, 0x2222
  mov cx, 0x3333
  mov dx, 0x4444
  mov si, 0x5555
  mov di, 0x6666
  mov bp, 0x7777
  push word 0x1234
  pop es
  push word 0x2345
  pop ds
  stc
  int 0x19
  mov al, 0xEE          ; not reached
  out DBGC, al
  jmp done
pass2:
  ; write this sector back patched, then reboot
  mov byte [patched], 'B'
  mov ax, 0x0301
  mov bx, 0x7C00
  mov cx, 0x0001
  mov dx, 0x0080
  int 0x13
  pushf
  pop ax
  out DBGC, al
  int 0x19
  mov al, 0xEF          ; not reached
  out DBGC, al
done:
  mov al, 0x10
  out 0xF4, al
  cli
  hlt
  times 0x1FD-($-$$) db 0
patched: db 'A'
  dw 0xAA55
